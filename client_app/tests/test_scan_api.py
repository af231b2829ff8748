"""Range scans: key order across tablets, limits and continuation cursors."""

from __future__ import annotations

from urllib.parse import quote


async def scan_all(api, table: str, limit: int) -> tuple[list, int]:
    """Every key of the table, page by page; and how many pages it took."""
    keys, pages, cursor = [], 0, None
    while True:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        answer = await api("GET", f"/api/v1/tables/{table}/rows?{query}")
        assert answer.status == 200, answer.json
        keys += [row["key"] for row in answer.json["rows"]]
        pages += 1
        cursor = answer.json["cursor"]
        if cursor is None:
            return keys, pages


async def test_integer_keys_scan_in_numeric_order_across_tablets_with_a_cursor(api, cluster):
    wanted = [-20, -3, 0, 1, 2, 9, 10, 11, 99, 100, 101, 110, 999, 1000, 12345]
    for key in reversed(wanted):
        cluster.put("products", "int", key, {"k": key})
    for key in range(200, 330):
        cluster.put("products", "int", key, {"k": key})
    keys, pages = await scan_all(api, "products", 70)
    assert keys == sorted(wanted + list(range(200, 330)))
    assert pages == 3


async def test_a_scan_honours_start_end_and_limit(api, cluster):
    for key in range(0, 300, 10):
        cluster.put("products", "int", key, {"k": key})
    answer = await api("GET", "/api/v1/tables/products/rows?start=55&end=150&limit=3")
    assert [row["key"] for row in answer.json["rows"]] == [60, 70, 80]
    assert answer.json["cursor"]
    rest = await api(
        "GET", f"/api/v1/tables/products/rows?cursor={answer.json['cursor']}&limit=100"
    )
    assert [row["key"] for row in rest.json["rows"]] == [90, 100, 110, 120, 130, 140]
    assert rest.json["cursor"] is None


async def test_a_page_that_fills_at_a_tablet_boundary_points_at_the_next_row(api, cluster):
    for key in (98, 99, 100, 101):
        cluster.put("products", "int", key, {})
    first = await api("GET", "/api/v1/tables/products/rows?start=98&limit=2")
    assert [row["key"] for row in first.json["rows"]] == [98, 99]
    second = await api("GET", f"/api/v1/tables/products/rows?cursor={first.json['cursor']}&limit=2")
    assert [row["key"] for row in second.json["rows"]] == [100, 101]
    assert second.json["cursor"] is None


async def test_string_keys_scan_in_byte_order(api, cluster):
    cluster.layout("names", "str", [(None, "tablet-1"), ("m", "tablet-2")])
    names = ["zoe", "Zed", "alice", "émile", "Bob", "mallory", "a b"]
    for name in names:
        cluster.put("names", "str", name, {})
    answer = await api("GET", "/api/v1/tables/names/rows?limit=100")
    keys = [row["key"] for row in answer.json["rows"]]
    assert keys == sorted(names, key=lambda k: k.encode())
    answer = await api("GET", f"/api/v1/tables/names/rows?start=b&end={quote('zz')}")
    assert [row["key"] for row in answer.json["rows"]] == ["mallory", "zoe"]


async def test_a_scan_of_an_empty_range_is_empty(api, cluster):
    answer = await api("GET", "/api/v1/tables/products/rows?start=10&end=10")
    assert answer.status == 200
    assert answer.json == {"rows": [], "cursor": None}


async def test_a_scan_rejects_a_bad_limit_and_a_bad_cursor(api, cluster):
    for query in ("limit=0", "limit=10001", "limit=ten", "cursor=bm9wZQ", "cursor=%%%"):
        answer = await api("GET", f"/api/v1/tables/products/rows?{query}")
        assert answer.status == 400, query
    answer = await api("GET", "/api/v1/tables/products/rows?cursor=bm9wZQ")
    assert answer.error_code == "invalid_cursor"


async def test_a_cursor_cannot_be_combined_with_start(api, cluster):
    cluster.put("products", "int", 1, {})
    cluster.put("products", "int", 2, {})
    first = await api("GET", "/api/v1/tables/products/rows?limit=1")
    answer = await api(
        "GET", f"/api/v1/tables/products/rows?limit=1&start=0&cursor={first.json['cursor']}"
    )
    assert (answer.status, answer.error_code) == (400, "validation_failed")


async def test_a_cursor_of_another_table_is_rejected(api, cluster):
    cluster.layout("other", "int", [(None, "tablet-1")])
    cluster.put("other", "int", 1, {})
    cluster.put("other", "int", 2, {})
    first = await api("GET", "/api/v1/tables/other/rows?limit=1")
    answer = await api("GET", f"/api/v1/tables/products/rows?cursor={first.json['cursor']}")
    assert (answer.status, answer.error_code) == (400, "invalid_cursor")


async def test_scan_bounds_are_keys_as_given_whitespace_included(api, cluster):
    cluster.layout("names", "str", [(None, "tablet-1")])
    for key in (" ", " a", "a", "b", "b "):
        cluster.put("names", "str", key, {})
    start, end = quote(" a"), quote("b ")
    answer = await api("GET", f"/api/v1/tables/names/rows?start={start}&end={end}")
    assert [row["key"] for row in answer.json["rows"]] == [" a", "a", "b"]
    answer = await api("GET", "/api/v1/tables/names/rows?start=%20&end=a")
    assert [row["key"] for row in answer.json["rows"]] == [" ", " a"]

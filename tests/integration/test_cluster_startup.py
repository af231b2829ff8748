"""The launcher's cluster (what `make run` starts) brings every role up, seeded.

`runcluster`'s own output and Ctrl-C are tested in ``test_cluster_restart.py``.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.integration.api import call

pytestmark = pytest.mark.integration


def test_every_role_answers_on_its_port_with_its_admin(cluster):
    ports = [cluster.master_port, *cluster.tablet_ports, *cluster.client_ports]
    for port in ports:
        status, body, _ = call("GET", f"{cluster.url(port)}/admin/login/", None)
        assert status == 200, (port, body[:200])
        assert b"distdb" in body


def test_the_admin_login_printed_for_each_role_works(cluster):
    import http.cookiejar
    import re

    for port in (cluster.master_port, cluster.tablet_ports[0], cluster.client_ports[0]):
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(f"{cluster.url(port)}/admin/login/").read().decode()
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode(
            {
                "username": "admin",
                "password": cluster.admin_password,
                "csrfmiddlewaretoken": csrf,
                "next": "/admin/",
            }
        ).encode()
        request = urllib.request.Request(f"{cluster.url(port)}/admin/login/", data=data)
        request.add_header("Referer", f"{cluster.url(port)}/admin/login/")
        landing = opener.open(request).read().decode()
        assert "Log out" in landing or "logout" in landing, port


def test_the_master_was_seeded_from_the_fixture_over_both_tablet_servers(cluster):
    out = cluster.shell(
        "master",
        "import json; from master_app.services.metadata import metadata_current;"
        "from master_app.models import ConsolidatedRow;"
        "m = metadata_current();"
        "print(json.dumps({'rows': ConsolidatedRow.objects.filter(table__name='products').count(),"
        " 'servers': sorted({t.server for t in m.tablets if t.table == 'products'})}))",
    )
    summary = json.loads(out)
    assert summary == {"rows": 1000, "servers": ["tablet-1", "tablet-2"]}


def test_each_tablet_server_holds_its_share_of_the_fixture(cluster):
    counts = []
    for i in range(1, len(cluster.tablet_ports) + 1):
        out = cluster.shell(
            f"tablet-{i}",
            "from tablet_app.models import Row, OwnedRange;"
            "print(Row.objects.filter(table='products').count(),"
            " OwnedRange.objects.filter(table='products').count())",
        )
        rows, ranges = map(int, out.split())
        assert ranges == 1
        counts.append(rows)
    assert counts == [500, 500]

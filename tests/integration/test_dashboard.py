"""The master's cluster dashboard in a real browser (headless Chromium driven by Selenium).

Skipped, saying why, where Debian's ``chromium`` and ``chromium-driver`` are not installed
(``.ci/run`` installs them). Set ``DISTDB_DASHBOARD_SCREENSHOT=<path>`` to keep a screenshot
(docs/images/dashboard.png was made so).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.api import call

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "no headless Chromium here: apt-get install chromium chromium-driver "
            "(Debian's packages; .ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ):
        options.add_argument(arg)
    # The machine's chromedriver, named explicitly: Selenium Manager would try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_an_operator_logs_in_and_finds_every_server_both_charts_and_the_plan(
    cluster, browser, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    # Some traffic first, so that the heatmap and the rates have something to show.
    base = f"{cluster.node_url('client-1')}/api/v1/tables/products/rows"
    for key in [*range(1, 1000, 9), *range(300, 340)]:  # a hot spot at 300-340
        assert call("GET", f"{base}/{key}", cluster.api_token)[0] == 200

    master = cluster.node_url("master")
    browser.get(f"{master}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(cluster.admin_password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # A click returns before the next page has loaded: wait for what is looked for (a
    # lookup at once could still see the login page — failed so once in CI).
    arrive = WebDriverWait(browser, 30)
    link = arrive.until(
        expected_conditions.element_to_be_clickable(
            (By.CSS_SELECTOR, "#distdb-dashboard-link a")  # on the index
        )
    )
    link.click()
    arrive.until(expected_conditions.title_contains("Cluster dashboard"))
    arrive.until(expected_conditions.presence_of_element_located((By.ID, "recent-runs")))
    nodes = {
        row.get_attribute("data-node")
        for row in browser.find_elements(By.CSS_SELECTOR, "#servers tbody tr")
    }
    roles = [
        row.get_attribute("data-role")
        for row in browser.find_elements(By.CSS_SELECTOR, "#servers tbody tr")
    ]
    assert {"master", "tablet-1", "tablet-2"} <= nodes
    assert roles.count("client") == len(cluster.client_ports)
    for node in ("tablet-1", "tablet-2"):
        state = browser.find_element(
            By.CSS_SELECTOR, f'#servers tr[data-node="{node}"] td:nth-child(3)'
        )
        assert state.text.startswith("up")
    distribution = browser.find_element(By.ID, "key-distribution-products")
    assert distribution.is_displayed()
    assert len(distribution.find_elements(By.TAG_NAME, "rect")) >= 2  # a range per server at least
    heatmap = browser.find_element(By.ID, "key-access-products")
    assert heatmap.is_displayed()
    assert len(heatmap.find_elements(By.TAG_NAME, "rect")) >= 60  # ranges x the last hour's minutes
    plan = browser.find_element(By.ID, "plan-preview")
    assert "products" in plan.text
    assert browser.find_element(By.ID, "recent-runs").is_displayed()

    shot = Path(os.environ.get("DISTDB_DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, max(900, int(height) + 100))
    assert browser.save_screenshot(str(shot))

"""Adminer in a real browser: the login form, the tables, seed rows, a query, a wrong password.

Runs against the stack of `nox -s e2e` (native or compose) the way a developer clicks through
it; `inv open`'s URL too. Screenshots of each step land in tests/e2e/artifacts/<backend>/.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from playwright.sync_api import expect

from scripts.backends import get_backend
from scripts.ops import browser
from scripts.settings import Settings
from tests.integration.helpers import run_inv

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.e2e.conftest import Shot

TABLES = ("users", "ai_agents", "reviews", "transactions")
DRIVER = "select[name='auth[driver]']"
SERVER = "input[name='auth[server]']"
USERNAME = "input[name='auth[username]']"
PASSWORD = "input[name='auth[password]']"
DATABASE = "input[name='auth[db]']"
# From docker/init-scripts/02-seed-dev-data.sql.
SEED_AGENTS = ("CodePilot Reviewer", "SQL Whisperer", "Inbox Zero Assistant")


def log_in(
    page: Page, url: str, stack: Settings, backend: str, password: str, *, shot: Shot | None = None
) -> None:
    """Fill Adminer's login form as a person would: PostgreSQL, the server as pre-filled."""
    page.goto(url)
    expect(page.locator(SERVER)).to_have_value(browser.adminer_server(stack, backend))
    page.select_option(DRIVER, "pgsql")
    page.fill(USERNAME, stack.postgres_user)
    page.fill(PASSWORD, password)
    page.fill(DATABASE, stack.postgres_db)
    if shot is not None:
        shot("filled-in")
    page.click("input[type=submit][value=Login]")


def log_in_ok(page: Page, url: str, stack: Settings, backend: str) -> None:
    log_in(page, url, stack, backend, stack.postgres_password.reveal())
    expect(page.locator("#tables")).to_be_visible()


def test_login_form_is_preset_to_the_stacks_postgres(
    page: Page, adminer_url: str, stack: Settings, backend: str, shot: Shot
) -> None:
    page.goto(adminer_url)
    expect(page).to_have_title(re.compile("Login - Adminer"))
    expect(page.locator(SERVER)).to_have_value(browser.adminer_server(stack, backend))
    if backend == "native":
        # The official image (and its compose stand-in) pre-fill the server only.
        expect(page.locator(DRIVER)).to_have_value("pgsql")
    shot("form")


def test_login_lists_the_four_tables(
    page: Page, adminer_url: str, stack: Settings, backend: str, shot: Shot
) -> None:
    log_in(page, adminer_url, stack, backend, stack.postgres_password.reveal(), shot=shot)
    tables = page.locator("#tables a.structure")
    expect(tables.first).to_be_visible()
    names = set(tables.all_inner_texts())
    assert set(TABLES) <= names, names
    expect(page.locator("#content")).to_contain_text("Tables and views")
    shot("tables")


def test_ai_agents_shows_the_seed_rows(
    page: Page, adminer_url: str, stack: Settings, backend: str, shot: Shot
) -> None:
    log_in_ok(page, adminer_url, stack, backend)
    page.click("#tables a.select[href$='select=ai_agents']")
    expect(page.locator("h2")).to_have_text("Select: ai_agents")
    rows = page.locator("#content table.checkable tbody tr")
    expect(rows.first).to_be_visible()
    for name in SEED_AGENTS:
        expect(page.locator("#content table.checkable")).to_contain_text(name)
    assert rows.count() >= len(SEED_AGENTS)
    shot("rows")


def test_sql_command_runs_a_select(
    page: Page, adminer_url: str, stack: Settings, backend: str, shot: Shot
) -> None:
    log_in_ok(page, adminer_url, stack, backend)
    page.click("#menu a:text-is('SQL command')")
    expect(page.locator("h2")).to_have_text("SQL command")
    # Adminer's syntax highlighter replaces the textarea with an editable <pre>: type into it.
    page.locator("pre.sqlarea").click()
    page.keyboard.type(
        "SELECT name, price FROM ai_agents WHERE name = 'SQL Whisperer' ORDER BY name"
    )
    shot("query")
    page.click("input[type=submit][value=Execute]")
    result = page.locator("#content table").first
    expect(result).to_contain_text("SQL Whisperer")
    expect(result).to_contain_text("49.00")
    expect(page.locator("#content")).to_contain_text("1 row")
    shot("result")


def test_wrong_password_shows_adminers_error(
    page: Page, adminer_url: str, stack: Settings, backend: str, shot: Shot
) -> None:
    log_in(page, adminer_url, stack, backend, "not-the-password", shot=shot)
    error = page.locator("#content .error")
    expect(error).to_contain_text("password authentication failed")
    expect(page.locator("#tables")).to_have_count(0)
    expect(page.locator(PASSWORD)).to_be_visible()  # the login form again
    shot("error")


def test_inv_open_prefills_system_server_user_and_database(
    page: Page, stack: Settings, backend: str, shot: Shot
) -> None:
    result = run_inv("open", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert stack.postgres_password.reveal() not in output
    assert "No display here" in output
    urls = re.findall(r"http://\S+", result.stdout)
    assert urls == [browser.adminer_url(stack, backend)], output
    assert "password" not in urls[0].split("?", 1)[1]
    page.goto(urls[0])
    expect(page.locator(DRIVER)).to_have_value("pgsql")
    expect(page.locator(SERVER)).to_have_value(browser.adminer_server(stack, backend))
    expect(page.locator(USERNAME)).to_have_value(stack.postgres_user)
    expect(page.locator(DATABASE)).to_have_value(stack.postgres_db)
    expect(page.locator(PASSWORD)).to_have_value("")
    shot("form")
    page.fill(PASSWORD, stack.postgres_password.reveal())
    page.click("input[type=submit][value=Login]")
    expect(page.locator("#tables")).to_be_visible()
    shot("logged-in")


def test_inv_open_says_when_adminer_is_not_running(stack: Settings) -> None:
    get_backend(stack).stop(["adminer"])
    try:
        result = run_inv("open")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Adminer is not running" in result.stderr
        assert "`inv up` starts it" in result.stderr
        assert "http://" not in result.stdout
    finally:
        started = run_inv("up")
        assert started.returncode == 0, started.stdout + started.stderr

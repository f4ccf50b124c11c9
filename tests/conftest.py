pytest_plugins = ["tests.fixtures_azurite", "tests.fixtures_postgres", "tests.fixtures_browser"]

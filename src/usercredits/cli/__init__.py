"""The ``usercredits`` command line."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="usercredits")
def main() -> None:
    """Prepaid user credits: demo, catalogue, expiry and operator commands."""

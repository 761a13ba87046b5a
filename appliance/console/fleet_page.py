"""The fleet page `/`: the document of `GET /api/v1/enclaves` as a table, rendered in full on
the server; `static/fleet.js` fetches the document every few seconds and re-renders the rows
(with textContent only: every value an appliance pushed is untrusted)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, render_template

REFRESH_SECONDS = 3


def fleet_blueprint(fleet: Callable[[], dict[str, Any]]) -> Blueprint:
    page = Blueprint("fleet_page", __name__)

    @page.get("/")
    def fleet_page() -> str:
        return render_template("fleet.html", fleet=fleet(), refresh_seconds=REFRESH_SECONDS)

    return page

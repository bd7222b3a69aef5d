"""The web chat page served at `/`: web/chat.html, one self-contained file (inline CSS and JS, nothing fetched but
this server's own /health and /v1/chat/completions).

The page itself is public (it holds no secret); its API calls carry the key the user types into its settings (kept
in the tab's sessionStorage), so a server with --api-key still refuses them without it. A Content-Security-Policy
allows only the page's own inline script and style (by hash) and requests to this origin: the page renders the
model's text as text, and should a bug ever let markup through, no injected script or handler would run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import re

from nanocode.agents.http_front import HttpResponse


def _hashes(html: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
    digests = [base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in blocks]
    return " ".join(f"'sha256-{d}'" for d in digests)


@functools.cache
def _page() -> tuple[bytes, list[tuple[str, str]]]:
    html = (importlib.resources.files("nanocode.agents") / "web" / "chat.html").read_text(encoding="utf-8")
    policy = (
        f"default-src 'none'; script-src {_hashes(html, 'script')}; style-src {_hashes(html, 'style')}; "
        "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    headers = [
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-cache"),
    ]
    return html.encode(), headers


def chat_page() -> HttpResponse:
    body, headers = _page()
    return HttpResponse(200, body, "text/html; charset=utf-8", list(headers))

"""``python -m service.migrate``: bring the record database to the head migration.

Run once before the API and the workers start (docker compose's one-shot ``migrate`` service
runs exactly this); never inside a request. A database already at head is left as it is.
"""

from __future__ import annotations

import sys

from sqlalchemy import make_url

from jobs.records import upgrade_to_head
from jobs.settings import Settings, get_settings


def migrate(settings: Settings) -> str:
    """Upgrade ``settings.db_url`` to head; returns the URL without its password."""
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        # The embedded default keeps its database under state_dir, which may not exist yet.
        from pathlib import Path

        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(url)
    return url.render_as_string(hide_password=True)


def main() -> int:
    where = migrate(get_settings())
    print(f"database at head: {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tablet server services: the data plane (``rows``) and the control plane (``control``).

Loaded by the tablet server role: the internal API (``tablet_app.internal_api``) calls
the data plane, the link agent calls the control plane, the admin calls either. Every
function is a plain, typed, synchronous function that does its own transactions;
call it from async code through one thread hop (``distdb.internal_http.run_sync``).

The package re-exports each module's ``__all__`` (the control plane's includes the
ownership functions it uses: metadata and freezes), so a name is listed in one place.
"""

from tablet_app.services import control, revocations, rows
from tablet_app.services.control import *  # noqa: F403 - the names of control.__all__
from tablet_app.services.revocations import *  # noqa: F403 - the names of revocations.__all__
from tablet_app.services.rows import *  # noqa: F403 - the names of rows.__all__

__all__ = control.__all__ + revocations.__all__ + rows.__all__

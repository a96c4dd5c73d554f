"""``python -m umadb``: run the server, like the ``umadb`` command."""

from umadb._server import main

main()

"""The demo refuses a taken port with a clear message instead of a traceback."""

from __future__ import annotations

import socket

from demo.run import main


def test_taken_port_is_reported_with_what_to_do(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    message = capsys.readouterr().err
    assert f"Port {port} on 127.0.0.1 is taken" in message and "DEMO_PORT" in message

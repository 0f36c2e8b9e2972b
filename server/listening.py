"""Opening the server's ports: one error for every port k8sailor is told to listen on.

The gRPC port, the health port and the /metrics port all fail the same way (in use, or not an
address of this machine), and `k8sailor-server` turns that into one line and exit 2, whichever
port it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

# The mesh socket: this user and its group (the pod's fsGroup, which the sidecar's user is in
# too) may connect; nobody else. gRPC makes it with the umask's mode (0755 usually), which
# would keep a sidecar running as another user out.
SOCKET_MODE = 0o660


class ListenError(OSError):
    """A port could not be opened where it was told to (in use, or a bad address)."""


async def bind(
    server: grpc.aio.Server,
    listen: str,
    credentials: grpc.ServerCredentials | None = None,
    *,
    flag: str = "",
) -> int:
    """Add listen (TLS with credentials) to the server, not yet started; the port it got. On
    failure the server is stopped and ListenError names the address (and the flag, if given)."""
    try:
        if credentials is not None:
            port = server.add_secure_port(listen, credentials)
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError:  # grpc's way of saying the bind failed
        port = 0
    if port == 0:
        await server.stop(None)
        where = f"{listen} ({flag})" if flag else listen
        if listen.startswith("unix:"):
            raise ListenError(
                f"cannot listen on {where}: the socket cannot be made there (is its directory "
                "writable by this user, with nothing but an old socket at that name?)"
            )
        raise ListenError(
            f"cannot listen on {where}: the port is in use or the address is not this machine's"
        )
    return port


async def bind_socket(server: grpc.aio.Server, path: Path, *, flag: str) -> None:
    """Add a plaintext Unix socket at path (an old socket there is replaced) to the server, not
    yet started, open to this user and group only (SOCKET_MODE); ListenError as bind()."""
    await bind(server, f"unix:{path}", flag=flag)
    try:
        # Made with the umask's mode (0755: only this user may connect), now widened to the
        # group and no further.
        os.chmod(path, SOCKET_MODE)
    except OSError as error:
        await server.stop(None)
        raise ListenError(
            f"cannot listen on unix:{path} ({flag}): cannot set its mode: {error.strerror or error}"
        ) from error

"""The master's internal HTTP API for client and tablet servers (lean ASGI, distdb.internal_http).

GET  /internal/v1/metadata[?fence=1]      the current routing metadata (fenced: after any
                                          commit in flight; tablets settling a freeze)
POST /internal/v1/tables                  create a table (client servers relay the public API)
POST /internal/v1/tables/{table}/keys     reserve a block of generated integer keys
POST /internal/v1/tables/{table}/rf       change a table's replication factor (client
                                          servers relay the public API's PATCH)
GET  /internal/v1/api-tokens/revoked      ids of revoked public API tokens
GET  /internal/v1/servers                 tablet servers whose heartbeats stopped (breakers)
POST /internal/v1/replicas/shrink         a leader drops a follower that does not acknowledge
                                          from its in-sync sets (answers the new metadata)
"""

from __future__ import annotations

from distdb.errors import Forbidden
from distdb.internal_http import InternalApp, InternalRequest, RevokedTokenIds, run_sync
from distdb.protocol import (
    KeyBlockRequest,
    RevokedTokens,
    ServerStates,
    ShrinkRequest,
    TableCreateRequest,
    TableRfRequest,
)
from master_app.services.metadata import metadata_current
from master_app.services.replicas import in_sync_shrink
from master_app.services.servers import tablet_servers_down
from master_app.services.tables import keys_allocate, table_create, table_rf_set
from master_app.services.tokens import api_tokens_revoked, server_tokens_revoked

app = InternalApp(revoked=RevokedTokenIds(lambda: frozenset(server_tokens_revoked())))
SERVERS = ("client", "tablet", "master")


@app.route("GET", "/internal/v1/metadata", roles=SERVERS)
async def get_metadata(request: InternalRequest):
    fenced = request.query.get("fence") == "1"
    return await run_sync(lambda: metadata_current(fenced=fenced))


@app.route("POST", "/internal/v1/tables", roles=("client", "master"))
async def create_table(request: InternalRequest):
    body = request.parse(TableCreateRequest)

    def create():
        table_create(body.name, body.key_type, body.columns, body.rf)
        return metadata_current()

    return await run_sync(create)


@app.route("POST", r"/internal/v1/tables/(?P<table>[A-Za-z0-9_-]{1,64})/keys", roles=("client",))
async def allocate_keys(request: InternalRequest):
    body = request.parse(KeyBlockRequest)
    return await run_sync(keys_allocate, request.params["table"], body.count, body.above)


@app.route(
    "POST", r"/internal/v1/tables/(?P<table>[A-Za-z0-9_-]{1,64})/rf", roles=("client", "master")
)
async def set_table_rf(request: InternalRequest):
    body = request.parse(TableRfRequest)

    def change():
        table_rf_set(request.params["table"], body.rf)
        return metadata_current()

    return await run_sync(change)


@app.route("GET", "/internal/v1/api-tokens/revoked", roles=("client",))
async def revoked_tokens(request: InternalRequest):
    return RevokedTokens(revoked=await run_sync(api_tokens_revoked))


@app.route("GET", "/internal/v1/servers", roles=("client",))
async def server_states(request: InternalRequest):
    return ServerStates(down=await run_sync(tablet_servers_down))


@app.route("POST", "/internal/v1/replicas/shrink", roles=("tablet",))
async def shrink_in_sync(request: InternalRequest):
    """The asking leader (its token's subject) drops ``follower`` from the in-sync sets of
    the ranges it leads; answers the metadata after that commit, for the leader to apply
    before it acknowledges without the follower."""
    body = request.parse(ShrinkRequest)
    if request.claims is None or not request.claims.sub:
        raise Forbidden("a leader asks for itself only")
    leader = request.claims.sub

    def shrink():
        in_sync_shrink(leader, body.follower, body.reason)
        return metadata_current()

    return await run_sync(shrink)

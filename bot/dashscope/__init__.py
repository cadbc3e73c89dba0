"""The provider client: DashScope's asynchronous video API (create, poll, list, uploads) over aiohttp.

`client.py` talks HTTP, `models.py` builds requests and reads answers as untrusted input, `families/` holds one
module per API family (what differs between request shapes: endpoint, input, media, bill, catalog rules),
`errors.py` is the one exception family (each error says whether to retry). Nothing here knows jobs or Discord.
"""

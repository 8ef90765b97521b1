"""The API's documentation registry and what is generated from it (docs/api, OpenRPC)."""

"""The platform's receiver (`gridedge receive`): the fleet's messages verified against a
gateway registry and stored once in PostgreSQL (needs the `platform` extra: psycopg)."""

#!/bin/bash
# Creates the registry's first admin user, interactively.
# Usage (from the login directory): . env/registry && ./create_admin.sh
if [ -z "$SQLALCHEMY_DATABASE_URI" ]; then
    echo "create_admin.sh: the registry environment is not loaded; run '. env/registry' first" >&2
    exit 1
fi
exec docker exec -it registry create_admin "$@"

#!/bin/bash
# Creates the registry's first admin user, interactively (needs a terminal).
# Usage (from the login directory): . env/registry && ./create_admin.sh
exec docker exec -it registry create_admin "$@"

#!/bin/bash
# Creates the registry's first admin user, interactively (needs a terminal).
# Usage (from this folder): . env/registry && ./create_admin.sh
exec @DOCKER@ exec -it @REGISTRY@ create_admin "$@"

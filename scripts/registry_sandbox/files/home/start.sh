#!/bin/bash
# (Re)creates the Quilt registry's containers. Sandbox stand-in for the start.sh of
# the AWS Marketplace deployment: same containers, same order, same env files.
# Run from this folder after `@DOCKER@ rm -f @REGISTRY@ @CATALOG@ @NGINX@`.
# Containers use the host network, bound to 127.0.0.1; the ports differ from the
# real host's (5000, 80) only when those were taken when the sandbox was made.
set -e
cd "$(dirname "$0")"

REGISTRY_IMAGE=@REGISTRY_IMAGE@
CATALOG_IMAGE=@CATALOG_IMAGE@
NGINX_IMAGE=@NGINX_IMAGE@
CATALOG_PORT=@CATALOG_PORT@
DB_DIR=@DB_DIR@
FAULTS_DIR=@FAULTS_DIR@
SETTINGS_DIR=@SETTINGS_DIR@

# Sandbox faults: a start that fails (always, or unless env/registry's last key is KEY).
refuse() {
    echo "docker: Error response from daemon: failed to create task for container: sandbox fault $1." >&2
    exit 125
}
[ ! -e "$FAULTS_DIR/start-fails" ] || refuse start-fails
if [ -e "$FAULTS_DIR/start-fails-unless-key" ]; then
    key=$(@READ_ENV@ env/registry | sed -n 's/^AWS_ACCESS_KEY_ID=//p' | tail -n 1)
    [ "$key" = "$(cat "$FAULTS_DIR/start-fails-unless-key")" ] || refuse start-fails-unless-key
fi

@DOCKER@ run -d --name @CATALOG@ --network host --env-file env/catalog \
    -e CATALOG_HOST=127.0.0.1 -e CATALOG_PORT="$CATALOG_PORT" "$CATALOG_IMAGE"

# Database migrations, one-off, before the registry starts. Against RDS this takes
# from seconds to minutes, and hangs while the database is unreachable.
@DOCKER@ run --rm --network host --env-file env/registry \
    -v "$DB_DIR:/data" -v "$FAULTS_DIR:/faults:ro" -v "$SETTINGS_DIR:/sandbox:ro" \
    "$REGISTRY_IMAGE" flask db upgrade

@DOCKER@ run -d --name @REGISTRY@ --network host --env-file env/registry \
    -v "$DB_DIR:/data" -v "$FAULTS_DIR:/faults:ro" -v "$SETTINGS_DIR:/sandbox:ro" \
    "$REGISTRY_IMAGE"

# nginx shares the registry's network namespace: it must start after it.
@DOCKER@ run -d --name @NGINX@ --network container:@REGISTRY@ \
    -v "$PWD/nginx-quilt.conf:/etc/nginx/conf.d/default.conf:ro" "$NGINX_IMAGE"

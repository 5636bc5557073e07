#!/bin/bash
# (Re)creates the Quilt registry's containers. Sandbox stand-in for the start.sh of
# the AWS Marketplace deployment: same containers, same order, same env files.
# Run from the login directory after `docker rm -f registry catalog registry-nginx`.
# Ports differ from the real host's (5000, 80) only when those were taken when
# the sandbox was made; containers use the host network, bound to 127.0.0.1.
set -e
cd "$(dirname "$0")"

REGISTRY_IMAGE=@REGISTRY_IMAGE@
CATALOG_IMAGE=@CATALOG_IMAGE@
NGINX_IMAGE=@NGINX_IMAGE@
CATALOG_PORT=@CATALOG_PORT@
DB_DIR=@DB_DIR@
FAULTS_DIR=@FAULTS_DIR@

if [ -e "$FAULTS_DIR/start-fails" ] || { [ -e "$FAULTS_DIR/start-fails-unless-key" ] &&
    ! grep -qx "AWS_ACCESS_KEY_ID=$(cat "$FAULTS_DIR/start-fails-unless-key")" env/registry; }; then
    echo "docker: Error response from daemon: failed to create task for container: sandbox fault start-fails." >&2
    exit 125
fi

docker run -d --name catalog --network host --env-file env/catalog \
    -e CATALOG_HOST=127.0.0.1 -e CATALOG_PORT="$CATALOG_PORT" "$CATALOG_IMAGE"

# Database migrations, one-off, before the registry starts.
docker run --rm --network host --env-file env/registry \
    -v "$DB_DIR:/data" -v "$FAULTS_DIR:/faults:ro" "$REGISTRY_IMAGE" flask db upgrade

docker run -d --name registry --network host --env-file env/registry \
    -v "$DB_DIR:/data" -v "$FAULTS_DIR:/faults:ro" "$REGISTRY_IMAGE"

# nginx shares the registry's network namespace: it must start after it.
docker run -d --name registry-nginx --network container:registry \
    -v "$PWD/nginx-quilt.conf:/etc/nginx/conf.d/default.conf:ro" "$NGINX_IMAGE"

# shellcheck shell=sh
# The key the registry runs with (quilt_ops.docker_access.ScriptDocker, only when asked for: the
# one place a script reads a container's environment): a function run after a step's prologue
# (say, qdocker). Values come only as arguments.

# docker_key_in_effect CONTAINER VARIABLE: "say key-in-effect", then the value of one variable in
# the container's environment as the process sees it (Docker keeps the last of duplicate
# entries), or nothing. Only that value leaves the host: it must not be a secret (key IDs only).
docker_key_in_effect() {
    say key-in-effect
    qdocker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' -- "$1" 2>/dev/null |
        awk -v name="$2" 'index($0, name "=") == 1 { value = substr($0, length(name) + 2); found = 1 }
            END { if (found) print value }'
}

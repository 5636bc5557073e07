# shellcheck shell=sh
# health's host side (quilt_ops.health), functions of a step's script: they run after its
# prologue (say, qfile). Values come only as arguments; nothing printed is a secret.

# health_curl: "say nocurl" when curl is missing (every probe then fails).
health_curl() {
    command -v curl >/dev/null 2>&1 || say nocurl
}

# health_probe NAME URL SECONDS: one probe with curl, "say probe NAME CURL_EXIT HTTP_CODE SECONDS"
# and the body's first 200 bytes. The body and curl's figures come back in one variable (figures
# on the last line): no temporary file on the host, whose name another user could have taken
# first. Each line of the body is sent as "> line": whatever answers on the port cannot make a
# section.
health_probe() {
    nl='
'
    b=$(curl -s -m "$3" -w '\n%{http_code} %{time_total}' "$2" 2>/dev/null)
    r=$?
    c=${b##*"$nl"}
    case $c in *[!0-9.\ ]* | "") c="000 0" ;; esac
    # shellcheck disable=SC2086  # $c is two words: the HTTP code and the seconds
    say probe "$1" "$r" $c
    printf %s "${b%"$nl"*}" | head -c 200 | sed "s/^/> /"
    echo
}

# health_env_file ENV_FILE: "say envfile", then "missing", or "unreadable" and its mode, or its
# mode, how many lines each key name has, the key ID and the bucket (each printed only when it
# has the shape of one: never a secret), and how many lines begin with "export".
health_env_file() {
    say envfile
    if ! qfile test -e "$1"; then
        echo missing
    elif ! qfile test -r "$1"; then
        echo unreadable
        qfile stat -L -c 'mode %a %U %G' -- "$1"
    else
        qfile stat -L -c 'mode %a %U %G' -- "$1"
        # Docker trims leading white space before the name; count each key name's lines.
        qfile cat -- "$1" |
            sed -n -E 's/^[[:space:]]*(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SECRET_KEY)=.*/key \1/p' |
            sort | uniq -c | awk '{print $2, $3, $1}'
        qfile cat -- "$1" | sed -n -E 's/^[[:space:]]*AWS_ACCESS_KEY_ID=([A-Z0-9]{16,128})\r?$/keyid \1/p' | tail -n 1
        # The bucket's name is no secret; only a valid bucket name is printed.
        qfile cat -- "$1" |
            sed -n -E 's/^[[:space:]]*PACKAGE_BUCKET_NAME=([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\r?$/bucket \1/p' |
            tail -n 1
        echo "exports $(qfile cat -- "$1" | grep -cE '^[[:space:]]*export[[:space:]]')"
    fi
}

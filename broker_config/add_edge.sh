#!/usr/bin/env bash
# Add a broker account: an edge box (user name = its edge id), or a centre account named in the ACL.
# Idempotent: an existing account keeps its password.
#
#   broker_config/add_edge.sh OUTDIR EDGE_ID [--client-cert]
#   broker_config/add_edge.sh OUTDIR centre|intake --service [--client-cert]
#
# OUTDIR/accounts/NAME/password   a new random password (mode 0600): give it to the box as its
#                                 broker.password_file, or export it in broker.password_env
# OUTDIR/passwd                   the mosquitto password_file entry (mosquitto_passwd; the password goes
#                                 through stdin, never on a command line)
# OUTDIR/accounts/NAME/client.crt, client.key   with --client-cert: a certificate (CN = NAME) from
#                                 OUTDIR/ca.key (make_certs.sh) for require_certificate true
# Prints file names only, never the password.
set -euo pipefail
umask 077

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
acl="${CITYOPS_ACL:-$here/acl}"
outdir=""
name=""
client_cert=0
service=0
while (($#)); do
    case "$1" in
        --client-cert) client_cert=1; shift ;;
        --service) service=1; shift ;;
        -h|--help) usage ;;
        -*) echo "add_edge.sh: unknown option $1" >&2; usage ;;
        *) if [[ -z "$outdir" ]]; then outdir="$1"; elif [[ -z "$name" ]]; then name="$1"; else usage; fi; shift ;;
    esac
done
[[ -n "$outdir" && -n "$name" ]] || usage

# The same rule as Site.edge_id (edge/config.py): one topic level, no / + # (they would move the box's
# topics, and Mosquitto denies pattern ACLs to such names), and not "." or ".." (a path here).
if [[ ! "$name" =~ ^[A-Za-z0-9_.-]+$ || "$name" == "." || "$name" == ".." ]]; then
    echo "add_edge.sh: '$name' is not a valid edge id (letters, digits, _ . - only)" >&2
    exit 2
fi
# The centre accounts are the `user` lines of the ACL: an edge box must never own one of those names.
mapfile -t services < <(sed -n 's/^user[[:space:]]\{1,\}\([^[:space:]]\{1,\}\).*/\1/p' "$acl")
is_service=0
for s in "${services[@]}"; do [[ "$s" == "$name" ]] && is_service=1; done
if ((service && !is_service)); then
    echo "add_edge.sh: --service: '$name' has no 'user' rules in $acl (known: ${services[*]})" >&2
    exit 2
fi
if ((is_service && !service)); then
    echo "add_edge.sh: '$name' is a centre account in $acl, not an edge id (add --service to create it)" >&2
    exit 2
fi
command -v mosquitto_passwd >/dev/null || { echo "add_edge.sh: mosquitto_passwd is not installed (apt install mosquitto)" >&2; exit 1; }

mkdir -p "$outdir/accounts/$name"
acct="$outdir/accounts/$name"
pwfile="$acct/password"
passwd="$outdir/passwd"
[[ -e "$passwd" ]] || : >"$passwd"
chmod 600 "$passwd"

fresh=0
if [[ ! -s "$pwfile" ]]; then
    # 32 characters from [A-Za-z0-9]: ≈ 190 bits, nothing a shell or a YAML file would mangle
    pw="$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 || true)"
    [[ ${#pw} -eq 32 ]] || { echo "add_edge.sh: could not read /dev/urandom" >&2; exit 1; }
    printf '%s\n' "$pw" >"$pwfile"
    unset pw
    fresh=1
fi
chmod 600 "$pwfile"

if ((fresh)) || ! grep -q "^${name//./\\.}:" "$passwd"; then
    # mosquitto_passwd asks twice on stdin (its prompts go to stdout); -b would put the password in argv
    { head -n1 "$pwfile"; head -n1 "$pwfile"; } | mosquitto_passwd "$passwd" "$name" >/dev/null
    chmod 600 "$passwd"
    echo "account $name: password in $pwfile, entry in $passwd"
else
    echo "account $name: kept (password in $pwfile, entry in $passwd)"
fi

if ((client_cert)); then
    [[ -s "$outdir/ca.key" && -s "$outdir/ca.crt" ]] || {
        echo "add_edge.sh: --client-cert needs $outdir/ca.key and ca.crt (run make_certs.sh $outdir first)" >&2; exit 1; }
    if [[ -s "$acct/client.key" && -s "$acct/client.crt" ]] &&
        openssl verify -CAfile "$outdir/ca.crt" "$acct/client.crt" >/dev/null 2>&1 &&
        openssl x509 -in "$acct/client.crt" -noout -checkend 2592000 >/dev/null; then
        echo "account $name: kept $acct/client.crt"
    else
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$acct/client.key" 2>/dev/null
        chmod 600 "$acct/client.key"
        openssl req -new -key "$acct/client.key" -out "$acct/client.csr" -subj "/CN=$name" 2>/dev/null
        openssl x509 -req -in "$acct/client.csr" -CA "$outdir/ca.crt" -CAkey "$outdir/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -days 825 -out "$acct/client.crt" 2>/dev/null \
            -extfile <(printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
                "extendedKeyUsage=clientAuth")
        rm -f "$acct/client.csr"
        chmod 644 "$acct/client.crt"
        echo "account $name: client certificate $acct/client.crt (CN=$name)"
    fi
fi

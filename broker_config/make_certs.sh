#!/usr/bin/env bash
# Make the broker's CA and server certificate (idempotent: run it again to add a host name).
#
#   broker_config/make_certs.sh OUTDIR [--host NAME_OR_IP]... [--days N]
#
# OUTDIR/ca.key, ca.crt     the CA (kept if present; 10 years). Keep ca.key off the broker if you can.
# OUTDIR/server.key, .crt   the broker's certificate, subjectAltName = localhost, 127.0.0.1 and every --host
#                           (re-issued when the host list changes, the CA changes or it expires within 30 days)
# Accounts (boxes, centre, intake) are added with broker_config/add_edge.sh OUTDIR NAME.
# Keys are EC P-256. Needs openssl. Prints file names only, never key material.
set -euo pipefail
umask 077

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

outdir=""
hosts=(localhost 127.0.0.1)
days=825
while (($#)); do
    case "$1" in
        --host) [[ $# -ge 2 && -n "$2" ]] || usage; hosts+=("$2"); shift 2 ;;
        --days) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || usage; days="$2"; shift 2 ;;
        -h|--help) usage ;;
        -*) echo "make_certs.sh: unknown option $1" >&2; usage ;;
        *) [[ -z "$outdir" ]] || usage; outdir="$1"; shift ;;
    esac
done
[[ -n "$outdir" ]] || usage
command -v openssl >/dev/null || { echo "make_certs.sh: openssl is not installed" >&2; exit 1; }
mkdir -p "$outdir"
cd "$outdir"

new_key() {  # new_key FILE: an EC P-256 private key, mode 0600
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 600 "$1"
}

# ------------------------------------------------------------------------------------------------ CA
if [[ -s ca.key && -s ca.crt ]]; then
    echo "CA: kept $outdir/ca.crt"
else
    new_key ca.key
    openssl req -x509 -new -key ca.key -out ca.crt -days 3650 -subj "/CN=cityops-edge MQTT CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 644 ca.crt
    rm -f server.crt  # a new CA: the old server certificate no longer verifies
    echo "CA: made $outdir/ca.crt"
fi

# ------------------------------------------------------------------------------------ server certificate
san=""
declare -A seen=()
for h in "${hosts[@]}"; do
    [[ -z "${seen[$h]:-}" ]] || continue
    seen[$h]=1
    if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then
        san+="${san:+,}IP:$h"
    elif [[ "$h" =~ ^[A-Za-z0-9.*-]+$ ]]; then
        san+="${san:+,}DNS:$h"
    else
        echo "make_certs.sh: --host $h is neither a host name nor an IP address" >&2
        exit 2
    fi
done

current() {  # the existing server certificate is still right for this CA, these hosts and 30 more days
    [[ -s server.key && -s server.crt && -s server.san ]] &&
        [[ "$(cat server.san)" == "$san" ]] &&
        openssl verify -CAfile ca.crt server.crt >/dev/null 2>&1 &&
        openssl x509 -in server.crt -noout -checkend 2592000 >/dev/null
}

if current; then
    echo "server certificate: kept $outdir/server.crt ($san)"
else
    new_key server.key
    openssl req -new -key server.key -out server.csr -subj "/CN=${hosts[2]:-localhost}" 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
        -days "$days" -out server.crt 2>/dev/null -extfile <(printf '%s\n' \
            "subjectAltName=$san" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth")
    rm -f server.csr
    chmod 644 server.crt
    printf '%s\n' "$san" >server.san
    echo "server certificate: made $outdir/server.crt ($san, $days days)"
fi

#!/usr/bin/env bash
# Certificates for the fake API server (tests, demo, benchmark): one place.
#
#   tests/apiserver/gen_certs.sh OUTDIR
#
# Writes into OUTDIR: ca.pem/ca.key (EC P-256 CA, CA:TRUE, keyCertSign),
# server.pem/server.key (serverAuth, SAN IP:127.0.0.1, IP:::1, DNS:localhost)
# and client.pem/client.key (clientAuth, CN=multimesh, O=system:nodes), all
# v3 certificates rustls/webpki accept. Validity starts an hour in the past
# (clock skew) and lasts a year: `openssl ca -startdate`, because OpenSSL
# 3.0's req/x509 cannot set notBefore. Keys are 0600.
set -euo pipefail
out=${1:?usage: gen_certs.sh OUTDIR}
mkdir -p "$out"
cd "$out"
umask 077
cat >openssl.cnf <<'CNF'
[ ca ]
default_ca = mm_ca
[ mm_ca ]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = mm_policy
unique_subject = no
copy_extensions = none
email_in_dn = no
preserve = yes
[ mm_policy ]
commonName = supplied
organizationName = optional
[ req ]
distinguished_name = mm_dn
prompt = no
[ mm_dn ]
CN = unused
[ v3_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ v3_server ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ v3_client ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF
: >index.txt
start=$(date -u -d '1 hour ago' +%Y%m%d%H%M%SZ)
end=$(date -u -d '365 days' +%Y%m%d%H%M%SZ)
ossl() { openssl "$@" </dev/null >>openssl.log 2>&1 || { cat openssl.log >&2; exit 1; }; }
req() { ossl req -config openssl.cnf -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$1.key" -subj "$2" -out "$1.csr"; }
sign() { local name=$1 ext=$2; shift 2
  ossl ca -config openssl.cnf -batch -notext -rand_serial -startdate "$start" -enddate "$end" \
    -keyfile ca.key -extensions "$ext" "$@" -in "$name.csr" -out "$name.pem"; }
req ca /CN=multimesh-test-ca
sign ca v3_ca -selfsign
req server /CN=127.0.0.1
sign server v3_server -cert ca.pem
req client /CN=multimesh/O=system:nodes
sign client v3_client -cert ca.pem
chmod 0644 ca.pem server.pem client.pem
rm -f ./*.csr index.txt* serial* ./*.log ./[0-9A-F]*.pem 2>/dev/null || true

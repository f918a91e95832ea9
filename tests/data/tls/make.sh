#!/usr/bin/env bash
# Regenerates the certificates of the TLS end-to-end tests (tests/tls.rs) with the openssl CLI.
# Run from anywhere: `bash tests/data/tls/make.sh`. Every certificate is X.509 v3 with a
# subjectAltName, as rustls requires (it refuses v1 certificates and ignores the common name),
# over P-256 keys in PKCS#8 (what `native_tls::Identity::from_pkcs8` takes), valid for 100 years.
#
#   ca.pem                      the test CA (CA:TRUE), which the tests trust; its key is deleted
#   server.pem, server.key      localhost and 127.0.0.1, signed by the CA: the good certificate
#   other.pem, other.key        other.example only, signed by the CA: a name mismatch
#   untrusted.pem, untrusted.key  localhost and 127.0.0.1, self-signed: trusted by nobody
set -euo pipefail
cd "$(dirname "$0")"
days=36500
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days "$days" \
  -subj "/CN=sprites-blocking test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" \
  -out ca.pem

leaf_ext() {
  cat <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
subjectAltName=$1
EXT
}

# A leaf signed by the CA: $1 = file stem, $2 = common name, $3 = subjectAltName.
signed() {
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$tmp/$1.csr"
  { leaf_ext "$3"; echo "authorityKeyIdentifier=keyid"; } >"$tmp/$1.ext"
  openssl x509 -req -in "$tmp/$1.csr" -CA ca.pem -CAkey "$tmp/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -sha256 -days "$days" -extfile "$tmp/$1.ext" -out "$1.pem" 2>/dev/null
}

signed server localhost "DNS:localhost,IP:127.0.0.1"
signed other other.example "DNS:other.example"

key untrusted.key
{ printf '[req]\ndistinguished_name = dn\n[dn]\n[v3]\n'; leaf_ext "DNS:localhost,IP:127.0.0.1"; } \
  >"$tmp/untrusted.cnf"
openssl req -x509 -new -key untrusted.key -sha256 -days "$days" -subj "/CN=localhost" \
  -config "$tmp/untrusted.cnf" -extensions v3 -out untrusted.pem

openssl verify -CAfile ca.pem server.pem other.pem >/dev/null

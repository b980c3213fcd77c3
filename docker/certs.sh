#!/bin/sh
# TLS for the compose stack, run once by its `certs` service: a private CA, a server certificate
# for OpenSearch (HTTP and transport) and one for Kafka, and the CA certificate for the clicktune
# containers, each in the volume of the service that reads it.
#
# It does nothing when the certificates exist. The CA key never leaves this container, so no one
# can issue more certificates for the stack; to reissue, remove the three tls volumes
# (`docker compose down -v` removes the data too) and start again. To use your own CA instead,
# put the same file names into the volumes before the first start.
set -eu

TLS_ROOT=${TLS_ROOT:-/tls}
DAYS=${TLS_DAYS:-825}
OS_DIR=$TLS_ROOT/opensearch
KAFKA_DIR=$TLS_ROOT/kafka
CLIENT_DIR=$TLS_ROOT/clicktune
# opensearch and kafka (appuser) both run as uid 1000 in their official images.
SERVICE_UID=${TLS_SERVICE_UID:-1000}

if [ -s "$CLIENT_DIR/ca.pem" ] && [ -s "$OS_DIR/opensearch.pem" ] && [ -s "$KAFKA_DIR/kafka.p12" ]; then
    echo "certs: TLS material present, nothing to do"
    exit 0
fi
if [ -e "$CLIENT_DIR/ca.pem" ] || [ -e "$OS_DIR/ca.pem" ] || [ -e "$KAFKA_DIR/kafka.p12" ]; then
    echo "certs: some TLS files exist but not all; remove the tls volumes and start again" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

cat >"$work/ca.cnf" <<EOF
[req]
distinguished_name = dn
x509_extensions = ca
prompt = no
[dn]
CN = clicktune compose CA
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
openssl req -x509 -new -config "$work/ca.cnf" -newkey rsa:2048 -nodes -sha256 -days "$DAYS" \
    -keyout "$work/ca-key.pem" -out "$work/ca.pem"

# issue NAME SUBJECT SAN: a key (PKCS#8, as OpenSearch requires) and a certificate signed by the CA.
issue() {
    openssl req -new -newkey rsa:2048 -nodes -subj "$2" \
        -keyout "$work/$1-key.pem" -out "$work/$1.csr"
    printf '%s\n' "basicConstraints = critical, CA:FALSE" \
        "keyUsage = critical, digitalSignature, keyEncipherment" \
        "extendedKeyUsage = serverAuth, clientAuth" \
        "subjectAltName = $3" \
        "subjectKeyIdentifier = hash" \
        "authorityKeyIdentifier = keyid" >"$work/$1.ext"
    openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
        -CAcreateserial -sha256 -days "$DAYS" -extfile "$work/$1.ext" -out "$work/$1.pem"
}

# OpenSearch checks clients against the hostname `opensearch`; its health check uses localhost.
# The OID marks the certificate as a node's for the security plugin (besides nodes_dn).
issue opensearch /CN=opensearch "DNS:opensearch, DNS:localhost, RID:1.2.3.4.5.5"
# For securityadmin.sh (plugins.security.authcz.admin_dn); no service uses it.
issue opensearch-admin /CN=opensearch-admin "DNS:opensearch-admin"
issue kafka /CN=kafka "DNS:kafka"

# Kafka reads a PKCS#12 keystore; its password only has to match the file, so it is random.
openssl rand -hex 24 >"$work/kafka.p12.password"
openssl pkcs12 -export -name kafka -in "$work/kafka.pem" -inkey "$work/kafka-key.pem" \
    -certfile "$work/ca.pem" -passout "file:$work/kafka.p12.password" -out "$work/kafka.p12"

mkdir -p "$OS_DIR" "$KAFKA_DIR" "$CLIENT_DIR"
cp "$work/ca.pem" "$work/opensearch.pem" "$work/opensearch-key.pem" \
    "$work/opensearch-admin.pem" "$work/opensearch-admin-key.pem" "$OS_DIR/"
cp "$work/kafka.p12" "$work/kafka.p12.password" "$KAFKA_DIR/"
chmod 644 "$OS_DIR/ca.pem" "$OS_DIR/opensearch.pem" "$OS_DIR/opensearch-admin.pem"
chmod 600 "$OS_DIR/opensearch-key.pem" "$OS_DIR/opensearch-admin-key.pem" "$KAFKA_DIR"/*
if [ "$(id -u)" = 0 ]; then
    chown -R "$SERVICE_UID:$SERVICE_UID" "$OS_DIR" "$KAFKA_DIR"
fi
# Last: its presence is what says the set is complete.
cp "$work/ca.pem" "$CLIENT_DIR/ca.pem"
chmod 644 "$CLIENT_DIR/ca.pem"
chmod 755 "$OS_DIR" "$KAFKA_DIR" "$CLIENT_DIR"
echo "certs: issued a CA and certificates for opensearch and kafka (valid $DAYS days)"

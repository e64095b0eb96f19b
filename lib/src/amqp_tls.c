/*
 * amqp_tls.c - the TLS socket of an amqps:// URL: rabbitmq-c 0.11's
 * amqp_ssl_socket (OpenSSL), set up by chorus so that its checks are right
 * and its failures say why.
 *
 *   chorus__tls_open():  new ssl socket -> CA (amqp.tls.ca.file, else the
 *       system store) -> client certificate + key (optional) -> the name
 *       to check -> TCP connect + handshake within amqp.connect.timeout.ms
 *
 * Why not rabbitmq-c's own checks: after the handshake it compares the
 * certificate's DNS names and CN with the URL's host, so an IP address
 * (the subjectAltName IP:127.0.0.1) never matches, and a refusal leaves
 * only AMQP_STATUS_SSL_PEER_VERIFY_FAILED with the reason freed with its
 * SSL object.  So both of its checks are turned off and OpenSSL does the
 * work during the handshake instead:
 *
 *   - the name goes into the context's X509_VERIFY_PARAM (a host name,
 *     or an IP address when the name is one), which SSL_new() copies;
 *   - SSL_VERIFY_PEER makes a failed verification abort the handshake
 *     before anything (the client certificate, credentials) is sent;
 *   - a verify callback records the first error (its X509_V_ERR_* code)
 *     in a verdict reached through the context's app data, and lets pass
 *     what a check switched off would refuse: a name mismatch when
 *     amqp.tls.verify.hostname is off, any other error when
 *     amqp.tls.verify.peer is off.
 *
 * The handshake runs inside amqp_socket_open_noblock(), on a non-blocking
 * socket polled until the same deadline as the TCP connect, so a broker
 * that accepts and then says nothing cannot hang chorus_start().  Later
 * reads and writes go through rabbitmq-c's socket class as for TCP; with
 * OpenSSL's read-ahead off, data not yet decrypted stays in the kernel's
 * buffer, so polling the socket still tells when a frame is there.
 */
#include "chorus_int.h"

#include <amqp_ssl_socket.h>
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    bool verify_peer, verify_hostname;
    bool refused; /* the first refusal: */
    int error;    /* X509_V_ERR_* */
    int depth;    /* 0: the broker's own certificate */
} verdict_t;

static bool name_error(int e) {
    return e == X509_V_ERR_HOSTNAME_MISMATCH || e == X509_V_ERR_IP_ADDRESS_MISMATCH;
}

static int verify_cb(int ok, X509_STORE_CTX *x) {
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    verdict_t *v = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (ok || !v)
        return ok;
    int e = X509_STORE_CTX_get_error(x);
    if (name_error(e) ? !v->verify_hostname : !v->verify_peer) {
        X509_STORE_CTX_set_error(x, X509_V_OK); /* that check is off */
        return 1;
    }
    if (!v->refused) {
        v->refused = true;
        v->error = e;
        v->depth = X509_STORE_CTX_get_error_depth(x);
    }
    return 0;
}

/* Encrypted keys are refused instead of OpenSSL asking on the terminal. */
static int no_password(char *buf, int size, int rwflag, void *opaque) {
    (void)buf, (void)size, (void)rwflag, (void)opaque;
    return 0;
}

/* The last OpenSSL error of this thread, as text ("" if none). */
static const char *ssl_reason(char *buf, size_t size) {
    unsigned long e = ERR_peek_last_error();
    buf[0] = '\0';
    if (e) {
        const char *r = ERR_reason_error_string(e);
        if (r)
            snprintf(buf, size, "%s", r);
        else
            ERR_error_string_n(e, buf, size);
    }
    return buf;
}

static chorus_err_t file_error(const char *key, const char *path, const char *what, char *err,
                               size_t size) {
    char why[256];
    if (access(path, R_OK) != 0)
        snprintf(why, sizeof(why), "%s", strerror(errno));
    else
        ssl_reason(why, sizeof(why));
    chorus__errstr(err, size, "TLS: %s \"%s\" %s: %s", key, path, what,
                   *why ? why : "unknown error");
    return CHORUS_ERR_TLS;
}

static chorus_err_t setup(amqp_socket_t *sock, SSL_CTX *ctx, const chorus__url_t *u,
                          const chorus__amqp_opts_t *o, char *err, size_t size) {
    const char *ca = o->tls.ca_file, *cert = o->tls.cert_file, *key = o->tls.key_file;
    if (ca && *ca) {
        if (amqp_ssl_socket_set_cacert(sock, ca) != AMQP_STATUS_OK)
            return file_error("amqp.tls.ca.file", ca, "holds no readable PEM certificate",
                              err, size);
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        chorus__errstr(err, size, "TLS: the system's CA store cannot be loaded; set "
                                  "amqp.tls.ca.file");
        return CHORUS_ERR_TLS;
    }
    bool has_cert = cert && *cert, has_key = key && *key;
    if (has_cert != has_key) {
        chorus__errstr(err, size, "TLS: amqp.tls.cert.file and amqp.tls.key.file go together "
                                  "(only %s is set)", has_cert ? "the certificate" : "the key");
        return CHORUS_ERR_TLS;
    }
    if (has_cert) {
        SSL_CTX_set_default_passwd_cb(ctx, no_password);
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
            return file_error("amqp.tls.cert.file", cert, "holds no readable PEM certificate",
                              err, size);
        /* (OpenSSL checks the key against the certificate as it loads it) */
        bool loaded = SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1;
        if (!loaded && ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
            return file_error("amqp.tls.key.file", key,
                              "holds no readable PEM key (encrypted keys are not supported)",
                              err, size);
        if (!loaded || SSL_CTX_check_private_key(ctx) != 1) {
            chorus__errstr(err, size, "TLS: amqp.tls.key.file \"%s\" is not the key of "
                                      "amqp.tls.cert.file \"%s\"", key, cert);
            return CHORUS_ERR_TLS;
        }
    }
    /* rabbitmq-c's checks off (see above): OpenSSL's, in the handshake. */
    amqp_ssl_socket_set_verify_peer(sock, 0);
    amqp_ssl_socket_set_verify_hostname(sock, 0);
    const char *name = o->tls.server_name && *o->tls.server_name ? o->tls.server_name : u->host;
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
    int set = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name)
                    : X509_VERIFY_PARAM_set1_host(param, name, 0);
    if (set != 1) {
        chorus__errstr(err, size, "TLS: \"%s\" cannot be checked against a certificate", name);
        return CHORUS_ERR_TLS;
    }
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int mode = o->tls.verify_peer || o->tls.verify_hostname ? SSL_VERIFY_PEER : SSL_VERIFY_NONE;
    SSL_CTX_set_verify(ctx, mode, verify_cb);
    return CHORUS_OK;
}

/* Why the handshake failed, as precisely as OpenSSL says. */
static chorus_err_t handshake_error(int s, const verdict_t *v, const chorus__url_t *u,
                                    const chorus__amqp_opts_t *o, char *err, size_t size) {
    char why[256];
    if (v->refused && name_error(v->error)) {
        const char *name = o->tls.server_name && *o->tls.server_name ? o->tls.server_name
                                                                     : u->host;
        chorus__errstr(err, size, "TLS handshake failed: hostname mismatch: the broker's "
                                  "certificate does not name \"%s\" (see "
                                  "amqp.tls.server.name)", name);
        return CHORUS_ERR_TLS;
    }
    if (v->refused) {
        const char *ca = o->tls.ca_file && *o->tls.ca_file ? o->tls.ca_file : NULL;
        chorus__errstr(err, size, "TLS handshake failed: certificate verify failed: %s (%s of "
                                  "the broker's chain; trusted: %s%s%s)",
                       X509_verify_cert_error_string(v->error),
                       v->depth == 0 ? "its own certificate" : "an issuer",
                       ca ? "amqp.tls.ca.file \"" : "the system's CA store", ca ? ca : "",
                       ca ? "\"" : "");
        return CHORUS_ERR_TLS;
    }
    if (s == AMQP_STATUS_TIMEOUT) {
        chorus__errstr(err, size, "TCP connect or TLS handshake: %s", amqp_error_string2(s));
        return CHORUS_ERR_TIMEOUT;
    }
    unsigned long e = ERR_peek_last_error();
    if (s == AMQP_STATUS_SSL_CONNECTION_FAILED || s == AMQP_STATUS_SSL_ERROR) {
        /* An alert or a protocol error is the broker's answer; a handshake
         * cut short (no error of the SSL library) may be an outage. */
        bool answer = e && ERR_GET_LIB(e) == ERR_LIB_SSL;
        ssl_reason(why, sizeof(why));
        chorus__errstr(err, size, "TLS handshake failed: %s%s", *why ? why : amqp_error_string2(s),
                       answer ? "" : " (connection closed during the handshake?)");
        return answer ? CHORUS_ERR_TLS : CHORUS_ERR_CONNECT;
    }
    chorus__errstr(err, size, "TCP connect: %s", amqp_error_string2(s));
    return CHORUS_ERR_CONNECT;
}

chorus_err_t chorus__tls_open(amqp_connection_state_t st, const chorus__url_t *u,
                              const chorus__amqp_opts_t *o, char *err, size_t size) {
    amqp_socket_t *sock = amqp_ssl_socket_new(st);
    if (!sock) {
        chorus__errstr(err, size, "TLS: cannot create an OpenSSL context");
        return CHORUS_ERR_NOMEM;
    }
    SSL_CTX *ctx = amqp_ssl_socket_get_context(sock);
    ERR_clear_error();
    chorus_err_t rc = setup(sock, ctx, u, o, err, size);
    if (rc)
        return rc;
    verdict_t v = {.verify_peer = o->tls.verify_peer, .verify_hostname = o->tls.verify_hostname};
    SSL_CTX_set_app_data(ctx, &v);
    struct timeval ct = {.tv_sec = o->connect_ms / 1000, .tv_usec = (o->connect_ms % 1000) * 1000};
    int s = amqp_socket_open_noblock(sock, u->host, u->port, &ct);
    SSL_CTX_set_app_data(ctx, NULL); /* v goes out of scope */
    if (s != AMQP_STATUS_OK)
        rc = handshake_error(s, &v, u, o, err, size);
    ERR_clear_error();
    return rc;
}

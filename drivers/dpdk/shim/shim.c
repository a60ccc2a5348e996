/* See shim.h. */
/* Session pools are "experimental" in 22.11 but are the only way to make sessions there. */
#define ALLOW_EXPERIMENTAL_API 1
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_dev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_ethdev.h>
#include <rte_eth_ring.h>
#include <rte_cryptodev.h>
#include <rte_crypto.h>

#include "shim.h"

/* The IV lives in the op's private area, right after the symmetric op (DPDK's convention). */
#define DVS_IV_OFFSET (sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op))
#define DVS_OP_PRIV_SIZE 16

int dvs_errno(void) { return rte_errno; }
const char *dvs_strerror(int errnum) { return rte_strerror(errnum); }
int dvs_socket_id(void) { return (int)rte_socket_id(); }

int dvs_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }
int dvs_eal_cleanup(void) { return rte_eal_cleanup(); }
int dvs_dev_probe(const char *devargs) { return rte_dev_probe(devargs); }

struct rte_mempool *dvs_pktmbuf_pool_create(const char *name, unsigned n, uint16_t data_room)
{
	unsigned cache = n >= 512 ? 64 : 0;
	return rte_pktmbuf_pool_create(name, n, cache, 0, data_room, (int)rte_socket_id());
}

void dvs_mempool_free(struct rte_mempool *mp) { rte_mempool_free(mp); }
unsigned dvs_mempool_avail_count(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }
struct rte_mbuf *dvs_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int dvs_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}
void dvs_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void dvs_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n) { rte_pktmbuf_free_bulk(mbufs, n); }
uint32_t dvs_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint8_t *dvs_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }
uint8_t *dvs_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return (uint8_t *)rte_pktmbuf_append(m, len);
}
uint16_t dvs_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }

int64_t dvs_pktmbuf_copy_out(const struct rte_mbuf *m, uint8_t *dst, size_t cap)
{
	size_t total = rte_pktmbuf_pkt_len(m);
	size_t at = 0;
	if (total > cap)
		return -1;
	for (const struct rte_mbuf *seg = m; seg != NULL && at < total; seg = seg->next) {
		size_t n = seg->data_len;
		if (n > total - at)
			n = total - at;
		memcpy(dst + at, rte_pktmbuf_mtod(seg, const uint8_t *), n);
		at += n;
	}
	return (int64_t)at;
}

uint16_t dvs_eth_dev_count_avail(void) { return rte_eth_dev_count_avail(); }
int dvs_eth_dev_get_port_by_name(const char *name, uint16_t *port_id)
{
	return rte_eth_dev_get_port_by_name(name, port_id);
}

int dvs_eth_dev_setup(uint16_t port_id, struct rte_mempool *rx_pool, uint16_t nb_rxd, uint16_t nb_txd)
{
	struct rte_eth_conf conf;
	int socket = rte_eth_dev_socket_id(port_id);
	int rc;
	memset(&conf, 0, sizeof(conf));
	if (socket < 0)
		socket = (int)rte_socket_id();
	rc = rte_eth_dev_configure(port_id, 1, 1, &conf);
	if (rc != 0)
		return rc;
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &nb_rxd, &nb_txd);
	if (rc != 0)
		return rc;
	rc = rte_eth_rx_queue_setup(port_id, 0, nb_rxd, (unsigned)socket, NULL, rx_pool);
	if (rc != 0)
		return rc;
	rc = rte_eth_tx_queue_setup(port_id, 0, nb_txd, (unsigned)socket, NULL);
	if (rc != 0)
		return rc;
	rc = rte_eth_dev_start(port_id);
	if (rc != 0)
		return rc;
	/* Some vdevs (net_ring, net_null) cannot change promiscuity; that is not an error for us. */
	rc = rte_eth_promiscuous_enable(port_id);
	if (rc != 0 && rc != -ENOTSUP)
		return rc;
	return 0;
}

int dvs_eth_dev_stop(uint16_t port_id) { return rte_eth_dev_stop(port_id); }
int dvs_eth_dev_close(uint16_t port_id) { return rte_eth_dev_close(port_id); }
uint16_t dvs_eth_rx_burst(uint16_t port_id, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port_id, queue, pkts, n);
}
uint16_t dvs_eth_tx_burst(uint16_t port_id, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port_id, queue, pkts, n);
}
int dvs_eth_rx_dropped(uint16_t port_id, uint64_t *dropped)
{
	struct rte_eth_stats stats;
	int rc = rte_eth_stats_get(port_id, &stats);
	if (rc != 0)
		return rc;
	*dropped = stats.imissed + stats.rx_nombuf;
	return 0;
}

int dvs_eth_from_rings(const char *name, struct rte_ring *rx, struct rte_ring *tx, uint16_t *port_id)
{
	struct rte_ring *rxs[1] = {rx};
	struct rte_ring *txs[1] = {tx};
	int port = rte_eth_from_rings(name, rxs, 1, txs, 1, rte_socket_id());
	if (port < 0)
		return port;
	*port_id = (uint16_t)port;
	return 0;
}

struct rte_ring *dvs_ring_create(const char *name, unsigned count, unsigned flags)
{
	return rte_ring_create(name, count, (int)rte_socket_id(), flags);
}
void dvs_ring_free(struct rte_ring *r) { rte_ring_free(r); }
unsigned dvs_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}
unsigned dvs_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}
unsigned dvs_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
unsigned dvs_ring_sp_sc_flags(void) { return RING_F_SP_ENQ | RING_F_SC_DEQ; }

int dvs_cryptodev_get_dev_id(const char *name) { return rte_cryptodev_get_dev_id(name); }

int dvs_cryptodev_setup(uint8_t dev_id, uint32_t nb_desc, struct rte_mempool *session_pool)
{
	struct rte_cryptodev_config conf;
	struct rte_cryptodev_qp_conf qp;
	int rc;
	memset(&conf, 0, sizeof(conf));
	memset(&qp, 0, sizeof(qp));
	conf.socket_id = rte_cryptodev_socket_id(dev_id);
	if (conf.socket_id < 0)
		conf.socket_id = (int)rte_socket_id();
	conf.nb_queue_pairs = 1;
	rc = rte_cryptodev_configure(dev_id, &conf);
	if (rc != 0)
		return rc;
	qp.nb_descriptors = nb_desc;
	qp.mp_session = session_pool;
	rc = rte_cryptodev_queue_pair_setup(dev_id, 0, &qp, conf.socket_id);
	if (rc != 0)
		return rc;
	return rte_cryptodev_start(dev_id);
}

void dvs_cryptodev_stop_close(uint8_t dev_id)
{
	rte_cryptodev_stop(dev_id);
	rte_cryptodev_close(dev_id);
}

struct rte_mempool *dvs_session_pool_create(const char *name, uint8_t dev_id, uint32_t n)
{
	unsigned size = rte_cryptodev_sym_get_private_session_size(dev_id);
	return rte_cryptodev_sym_session_pool_create(name, n, size, 0, 0, (int)rte_socket_id());
}

struct rte_mempool *dvs_crypto_op_pool_create(const char *name, uint32_t n)
{
	return rte_crypto_op_pool_create(name, RTE_CRYPTO_OP_TYPE_SYMMETRIC, n, 0, DVS_OP_PRIV_SIZE,
					 (int)rte_socket_id());
}

void *dvs_aead_gcm_session_create(uint8_t dev_id, struct rte_mempool *session_pool, int encrypt,
				  const uint8_t *key, uint16_t key_len, uint16_t aad_len,
				  uint16_t digest_len)
{
	struct rte_crypto_sym_xform xform;
	memset(&xform, 0, sizeof(xform));
	xform.type = RTE_CRYPTO_SYM_XFORM_AEAD;
	xform.aead.op = encrypt ? RTE_CRYPTO_AEAD_OP_ENCRYPT : RTE_CRYPTO_AEAD_OP_DECRYPT;
	xform.aead.algo = RTE_CRYPTO_AEAD_AES_GCM;
	xform.aead.key.data = key;
	xform.aead.key.length = key_len;
	xform.aead.iv.offset = DVS_IV_OFFSET;
	xform.aead.iv.length = 12;
	xform.aead.aad_length = aad_len;
	xform.aead.digest_length = digest_len;
	return rte_cryptodev_sym_session_create(dev_id, &xform, session_pool);
}

int dvs_session_free(uint8_t dev_id, void *session)
{
	return rte_cryptodev_sym_session_free(dev_id, session);
}

struct rte_crypto_op *dvs_crypto_op_alloc(struct rte_mempool *op_pool)
{
	return rte_crypto_op_alloc(op_pool, RTE_CRYPTO_OP_TYPE_SYMMETRIC);
}
void dvs_crypto_op_free(struct rte_crypto_op *op) { rte_crypto_op_free(op); }

void dvs_crypto_op_prepare_aead(struct rte_crypto_op *op, void *session, struct rte_mbuf *m,
				uint16_t aad_room, uint32_t text_len, const uint8_t *iv,
				uint16_t iv_len)
{
	struct rte_crypto_sym_op *sym = op->sym;
	uint8_t *iv_at = rte_crypto_op_ctod_offset(op, uint8_t *, DVS_IV_OFFSET);
	memcpy(iv_at, iv, iv_len);
	rte_crypto_op_attach_sym_session(op, session);
	sym->m_src = m;
	sym->m_dst = NULL;
	sym->aead.data.offset = aad_room;
	sym->aead.data.length = text_len;
	sym->aead.aad.data = rte_pktmbuf_mtod(m, uint8_t *);
	sym->aead.aad.phys_addr = rte_pktmbuf_iova(m);
	sym->aead.digest.data = rte_pktmbuf_mtod_offset(m, uint8_t *, aad_room + text_len);
	sym->aead.digest.phys_addr = rte_pktmbuf_iova_offset(m, aad_room + text_len);
}

int dvs_crypto_op_status(const struct rte_crypto_op *op) { return op->status; }
int dvs_crypto_op_status_success(void) { return RTE_CRYPTO_OP_STATUS_SUCCESS; }

uint16_t dvs_cryptodev_enqueue_burst(uint8_t dev_id, uint16_t qp, struct rte_crypto_op **ops, uint16_t n)
{
	return rte_cryptodev_enqueue_burst(dev_id, qp, ops, n);
}
uint16_t dvs_cryptodev_dequeue_burst(uint8_t dev_id, uint16_t qp, struct rte_crypto_op **ops, uint16_t n)
{
	return rte_cryptodev_dequeue_burst(dev_id, qp, ops, n);
}

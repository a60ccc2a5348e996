/* The C side of dvipsec-dpdk: DPDK's inline functions and macros as real symbols, plus a few
 * setup helpers that fill DPDK's large configuration structs in C so the Rust side never has to
 * mirror their layout. Every function is a thin pass-through; the Rust wrappers own the
 * safety reasoning. */
#ifndef DVIPSEC_DPDK_SHIM_H
#define DVIPSEC_DPDK_SHIM_H

#include <stdint.h>
#include <stddef.h>

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;
struct rte_crypto_op;

int dvs_errno(void);
const char *dvs_strerror(int errnum);
int dvs_socket_id(void);

/* EAL */
int dvs_eal_init(int argc, char **argv);
int dvs_eal_cleanup(void);
int dvs_dev_probe(const char *devargs);

/* mbufs */
struct rte_mempool *dvs_pktmbuf_pool_create(const char *name, unsigned n, uint16_t data_room);
void dvs_mempool_free(struct rte_mempool *mp);
unsigned dvs_mempool_avail_count(const struct rte_mempool *mp);
struct rte_mbuf *dvs_pktmbuf_alloc(struct rte_mempool *mp);
int dvs_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void dvs_pktmbuf_free(struct rte_mbuf *m);
void dvs_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n);
uint32_t dvs_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint8_t *dvs_pktmbuf_mtod(struct rte_mbuf *m);
uint8_t *dvs_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
uint16_t dvs_pktmbuf_tailroom(const struct rte_mbuf *m);
/* Copies the whole packet (all segments) into dst; returns its length, or -1 when it does not fit. */
int64_t dvs_pktmbuf_copy_out(const struct rte_mbuf *m, uint8_t *dst, size_t cap);

/* ethdev */
uint16_t dvs_eth_dev_count_avail(void);
int dvs_eth_dev_get_port_by_name(const char *name, uint16_t *port_id);
int dvs_eth_dev_setup(uint16_t port_id, struct rte_mempool *rx_pool, uint16_t nb_rxd, uint16_t nb_txd);
int dvs_eth_dev_stop(uint16_t port_id);
int dvs_eth_dev_close(uint16_t port_id);
uint16_t dvs_eth_rx_burst(uint16_t port_id, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t dvs_eth_tx_burst(uint16_t port_id, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
/* imissed + rx_nombuf: frames the device dropped before we could take them. */
int dvs_eth_rx_dropped(uint16_t port_id, uint64_t *dropped);
int dvs_eth_from_rings(const char *name, struct rte_ring *rx, struct rte_ring *tx, uint16_t *port_id);

/* rings */
struct rte_ring *dvs_ring_create(const char *name, unsigned count, unsigned flags);
void dvs_ring_free(struct rte_ring *r);
unsigned dvs_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned dvs_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned dvs_ring_count(const struct rte_ring *r);
unsigned dvs_ring_sp_sc_flags(void);

/* cryptodev */
int dvs_cryptodev_get_dev_id(const char *name);
/* One queue pair, started. */
int dvs_cryptodev_setup(uint8_t dev_id, uint32_t nb_desc, struct rte_mempool *session_pool);
void dvs_cryptodev_stop_close(uint8_t dev_id);
struct rte_mempool *dvs_session_pool_create(const char *name, uint8_t dev_id, uint32_t n);
struct rte_mempool *dvs_crypto_op_pool_create(const char *name, uint32_t n);
/* An AES-GCM AEAD session; encrypt != 0 for seal. NULL with rte_errno set on failure. */
void *dvs_aead_gcm_session_create(uint8_t dev_id, struct rte_mempool *session_pool, int encrypt,
                                  const uint8_t *key, uint16_t key_len, uint16_t aad_len,
                                  uint16_t digest_len);
int dvs_session_free(uint8_t dev_id, void *session);
struct rte_crypto_op *dvs_crypto_op_alloc(struct rte_mempool *op_pool);
void dvs_crypto_op_free(struct rte_crypto_op *op);
/* Points the op at the mbuf laid out as [aad (aad_room bytes)][text (text_len)][digest]. */
void dvs_crypto_op_prepare_aead(struct rte_crypto_op *op, void *session, struct rte_mbuf *m,
                                uint16_t aad_room, uint32_t text_len, const uint8_t *iv,
                                uint16_t iv_len);
int dvs_crypto_op_status(const struct rte_crypto_op *op);
int dvs_crypto_op_status_success(void);
uint16_t dvs_cryptodev_enqueue_burst(uint8_t dev_id, uint16_t qp, struct rte_crypto_op **ops, uint16_t n);
uint16_t dvs_cryptodev_dequeue_burst(uint8_t dev_id, uint16_t qp, struct rte_crypto_op **ops, uint16_t n);

#endif

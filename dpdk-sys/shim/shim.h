/* One-line wrappers that give DPDK's static inline functions and macros a
 * linkable symbol for Rust. Every function here is named lz_<what it wraps>. */
#ifndef LAZARUS_DPDK_SHIM_H
#define LAZARUS_DPDK_SHIM_H

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_malloc.h>
#include <rte_bus_vdev.h>
#include <rte_telemetry.h>
#include <rte_version.h>
#include <rte_thash.h>

uint16_t lz_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t lz_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
struct rte_mbuf *lz_rte_pktmbuf_alloc(struct rte_mempool *mp);
int lz_rte_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned count);
void lz_rte_pktmbuf_free(struct rte_mbuf *m);
void *lz_rte_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t lz_rte_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t lz_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
/* For each of pkts[0..n): where its first segment's data starts and how long
 * it is, as rte_pktmbuf_mtod and rte_pktmbuf_data_len say: one call a burst. */
/* Per packet: its first segment's data and length, and what the NIC found
 * of its checksums in one byte: bits 0-1 IP, bits 2-3 L4, each 0 unknown,
 * 1 good (or "none": checked, the field not filled), 2 bad. */
void lz_rte_pktmbuf_views(struct rte_mbuf *const *pkts, uint16_t n, const uint8_t **data, uint16_t *len, uint8_t *csum);
char *lz_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
unsigned lz_rte_lcore_id(void);
uint64_t lz_rte_rdtsc(void);
int lz_rte_errno(void);
void lz_rte_prefetch0(const void *p);



/* RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP: function-like macros
 * bindgen cannot evaluate. */
uint64_t lz_rss_hf_ip_tcp_udp(void);
/* Which of `hf` hash the ports of TCP/UDP over IPv4/IPv6 (each a
 * RTE_ETH_RSS_NONFRAG_* bit): bit 0 v4 TCP, 1 v4 UDP, 2 v6 TCP, 3 v6 UDP. */
uint32_t lz_rss_l4_hashed(uint64_t hf);
/* Fills port's redirection table of reta_size entries with entry i ->
 * queue i % queues; rte_eth_dev_rss_reta_update's result. */
int lz_rss_reta_spread(uint16_t port, uint16_t reta_size, uint16_t queues);
/* rte_softrss: DPDK's software Toeplitz over tuple words in host order. */
uint32_t lz_rte_softrss(uint32_t *tuple, uint32_t words, const uint8_t *key);
/* RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | _UDP_CKSUM | _TCP_CKSUM. */
uint64_t lz_rx_offload_cksum(void);
#endif

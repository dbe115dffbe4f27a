#include <string.h>
#include <errno.h>
#include "shim.h"
#include <rte_prefetch.h>

uint16_t lz_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{ return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts); }

uint16_t lz_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{ return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts); }

struct rte_mbuf *lz_rte_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int lz_rte_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned count)
{ return rte_pktmbuf_alloc_bulk(pool, mbufs, count); }

void lz_rte_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void *lz_rte_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

uint16_t lz_rte_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }

uint32_t lz_rte_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }

static inline uint8_t csum_state(uint64_t flags, uint64_t mask, uint64_t good, uint64_t bad)
{
    uint64_t f = flags & mask;
    if (f == 0)
        return 0; /* unknown */
    if (f == bad)
        return 2;
    return 1; /* good, or none: verified, only the field is not filled */
}

void lz_rte_pktmbuf_views(struct rte_mbuf *const *pkts, uint16_t n, const uint8_t **data, uint16_t *len, uint8_t *csum)
{
    for (uint16_t i = 0; i < n; i++) {
        uint64_t f = pkts[i]->ol_flags;
        data[i] = rte_pktmbuf_mtod(pkts[i], const uint8_t *);
        len[i] = rte_pktmbuf_data_len(pkts[i]);
        csum[i] = csum_state(f, RTE_MBUF_F_RX_IP_CKSUM_MASK, RTE_MBUF_F_RX_IP_CKSUM_GOOD, RTE_MBUF_F_RX_IP_CKSUM_BAD)
                | csum_state(f, RTE_MBUF_F_RX_L4_CKSUM_MASK, RTE_MBUF_F_RX_L4_CKSUM_GOOD, RTE_MBUF_F_RX_L4_CKSUM_BAD) << 2;
    }
}

char *lz_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }

unsigned lz_rte_lcore_id(void) { return rte_lcore_id(); }

uint64_t lz_rte_rdtsc(void) { return rte_rdtsc(); }

int lz_rte_errno(void) { return rte_errno; }

void lz_rte_prefetch0(const void *p) { rte_prefetch0(p); }

uint64_t lz_rss_hf_ip_tcp_udp(void) { return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP; }

uint32_t lz_rss_l4_hashed(uint64_t hf)
{
    return ((hf & RTE_ETH_RSS_NONFRAG_IPV4_TCP) ? 1u : 0u) | ((hf & RTE_ETH_RSS_NONFRAG_IPV4_UDP) ? 2u : 0u) |
           ((hf & RTE_ETH_RSS_NONFRAG_IPV6_TCP) ? 4u : 0u) | ((hf & RTE_ETH_RSS_NONFRAG_IPV6_UDP) ? 8u : 0u);
}

int lz_rss_reta_spread(uint16_t port, uint16_t reta_size, uint16_t queues)
{
    struct rte_eth_rss_reta_entry64 conf[2048 / RTE_ETH_RETA_GROUP_SIZE];
    if (reta_size == 0 || queues == 0 || reta_size > 2048)
        return -EINVAL;
    memset(conf, 0, sizeof(conf));
    for (uint16_t i = 0; i < reta_size; i++) {
        conf[i / RTE_ETH_RETA_GROUP_SIZE].mask |= 1ULL << (i % RTE_ETH_RETA_GROUP_SIZE);
        conf[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE] = i % queues;
    }
    return rte_eth_dev_rss_reta_update(port, conf, reta_size);
}

uint32_t lz_rte_softrss(uint32_t *tuple, uint32_t words, const uint8_t *key)
{
    return rte_softrss(tuple, words, key);
}

uint64_t lz_rx_offload_cksum(void)
{
    return RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
}

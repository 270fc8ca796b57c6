/*
 * gwmedia: the gateway's own conference-bridge port, so that no Python runs per audio frame.
 *
 * With pjsua2's AudioMediaPort the conference clock thread calls into Python twice per call
 * every 20 ms (a SWIG director call, the GIL, a std::vector copy), which measured 0.7-0.8 % of
 * a core per call and made every call's RTP wait for the GIL (docs/benchmarks.md, issue 8).
 * This port keeps two byte rings instead: the clock thread puts caller frames into one and
 * takes agent frames from the other, in C, under a mutex held for one memcpy. The gateway's
 * event loop exchanges audio with the rings in batches (gateway/sip/native.py, through ctypes,
 * which releases the GIL during each call).
 *
 * Format: PCM16 mono 8 kHz, 20 ms frames (320 bytes), the bridge's clock. The loop may take
 * caller audio already in G.711 (one byte per sample, ITU-T G.711 by table lookup, the same
 * tables as gateway/media/g711.py) and in whole chunks of its choosing, so a call whose agent
 * speaks audio/pcmu or audio/pcma costs Python no per-sample work at all.
 *
 * Overflow policy. Caller ring: drop the oldest frame when full (real-time audio never waits)
 * and count it. Agent ring: gw_port_write accepts only what fits (the caller keeps the rest);
 * when empty, the port plays silence, counted as an underrun while the loop has marked the
 * port busy (agent audio was expected) and as idle silence otherwise.
 *
 * Lifetime. pjmedia 2.17 removes conference ports asynchronously and destroys a port through
 * its group lock when the bridge lets go. The rings live in a separately allocated state with
 * two references: one held by the pjmedia port (dropped in its on_destroy) and one held by
 * Python (dropped by gw_port_release). So the loop may keep reading a port the SIP thread has
 * already detached, and neither side frees memory the other still uses.
 *
 * Threads: gw_port_create, gw_port_connect and gw_port_detach call pjsua and must run on a
 * thread registered with pjlib (the gateway's sip thread). The ring functions call no pjlib
 * code and may run on any thread.
 *
 * Built by scripts/build-pjsua2.sh against the headers of the same pjproject build and linked
 * to its _pjsua2 module, whose exported symbols it uses.
 */

#include <pjsua-lib/pjsua.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GW_CLOCK_RATE 8000
#define GW_SAMPLES_PER_FRAME 160
#define GW_FRAME_BYTES (GW_SAMPLES_PER_FRAME * 2)
#define GW_SIGNATURE PJMEDIA_SIG_CLASS_APP('G', 'W', 'M')
#define GW_ABI_VERSION 3

/* Caller audio formats gw_port_exchange can hand out (rx_codec). */
enum { GW_RX_PCM16, GW_RX_PCMU, GW_RX_PCMA };

/* Counter indexes, read with gw_port_counters (the Python side names them). */
enum {
    GW_RX_FRAMES,        /* caller frames stored */
    GW_RX_DROPPED,       /* caller frames dropped (oldest) on a full ring */
    GW_TX_FRAMES,        /* agent frames played */
    GW_TX_UNDERRUN,      /* silence played while busy */
    GW_TX_IDLE,          /* silence played while not busy */
    GW_TX_CLEARED,       /* agent frames thrown away by gw_port_tx_clear */
    GW_COUNTERS
};

typedef struct ring {
    uint8_t *buf;
    unsigned cap;   /* bytes, a multiple of GW_FRAME_BYTES */
    unsigned head;  /* read position */
    unsigned len;   /* bytes stored */
} ring;

typedef struct gw_port {
    pjmedia_port *port;     /* owned by its pool; NULL once detached */
    pjsua_conf_port_id slot;
    pthread_mutex_t lock;
    int refs;               /* pjmedia side + Python side */
    int busy;               /* agent audio expected: empty ring = underrun */
    ring rx;
    ring tx;
    uint64_t counters[GW_COUNTERS];
} gw_port;

struct port_data_ptr {
    gw_port *gw;
    pj_pool_t *pool;
};

static void ring_put(ring *r, const uint8_t *src, unsigned n)
{
    unsigned tail = (r->head + r->len) % r->cap;
    unsigned first = r->cap - tail < n ? r->cap - tail : n;
    memcpy(r->buf + tail, src, first);
    memcpy(r->buf, src + first, n - first);
    r->len += n;
}

static void ring_get(ring *r, uint8_t *dst, unsigned n)
{
    unsigned first = r->cap - r->head < n ? r->cap - r->head : n;
    memcpy(dst, r->buf + r->head, first);
    memcpy(dst + first, r->buf, n - first);
    r->head = (r->head + n) % r->cap;
    r->len -= n;
}

static void gw_unref(gw_port *gw)
{
    int left = __atomic_sub_fetch(&gw->refs, 1, __ATOMIC_ACQ_REL);
    if (left == 0) {
        pthread_mutex_destroy(&gw->lock);
        free(gw->rx.buf);
        free(gw->tx.buf);
        free(gw);
    }
}

/* Clock thread: a caller frame from the bridge. */
static pj_status_t on_put_frame(pjmedia_port *port, pjmedia_frame *frame)
{
    gw_port *gw = ((struct port_data_ptr *)port->port_data.pdata)->gw;
    if (frame->type != PJMEDIA_FRAME_TYPE_AUDIO || frame->size != GW_FRAME_BYTES)
        return PJ_SUCCESS;
    pthread_mutex_lock(&gw->lock);
    if (gw->rx.len + GW_FRAME_BYTES > gw->rx.cap) {
        gw->rx.head = (gw->rx.head + GW_FRAME_BYTES) % gw->rx.cap;
        gw->rx.len -= GW_FRAME_BYTES;
        gw->counters[GW_RX_DROPPED]++;
    }
    ring_put(&gw->rx, (const uint8_t *)frame->buf, GW_FRAME_BYTES);
    gw->counters[GW_RX_FRAMES]++;
    pthread_mutex_unlock(&gw->lock);
    return PJ_SUCCESS;
}

/* Clock thread: the next agent frame for the caller, silence when there is none. */
static pj_status_t on_get_frame(pjmedia_port *port, pjmedia_frame *frame)
{
    gw_port *gw = ((struct port_data_ptr *)port->port_data.pdata)->gw;
    unsigned size = (unsigned)frame->size < GW_FRAME_BYTES ? (unsigned)frame->size
                                                           : GW_FRAME_BYTES;
    pthread_mutex_lock(&gw->lock);
    if (gw->tx.len >= GW_FRAME_BYTES) {
        uint8_t tmp[GW_FRAME_BYTES];
        ring_get(&gw->tx, tmp, GW_FRAME_BYTES);
        gw->counters[GW_TX_FRAMES]++;
        pthread_mutex_unlock(&gw->lock);
        memcpy(frame->buf, tmp, size);
    } else {
        gw->counters[gw->busy ? GW_TX_UNDERRUN : GW_TX_IDLE]++;
        pthread_mutex_unlock(&gw->lock);
        memset(frame->buf, 0, size);
    }
    /* Always audio: the call's stream keeps sending RTP (silence) while the agent is quiet. */
    frame->type = PJMEDIA_FRAME_TYPE_AUDIO;
    frame->size = size;
    return PJ_SUCCESS;
}

/* Whoever drops the port's last reference (the clock thread after an asynchronous removal). */
static pj_status_t on_destroy(pjmedia_port *port)
{
    struct port_data_ptr *pd = (struct port_data_ptr *)port->port_data.pdata;
    gw_port *gw = pd->gw;
    pj_pool_t *pool = pd->pool;
    gw_unref(gw);
    pj_pool_release(pool);
    return PJ_SUCCESS;
}

/* G.711 encoders as 64 Ki-entry tables indexed by the sample's 16 bits, built once. */
static uint8_t ulaw_tab[65536];
static uint8_t alaw_tab[65536];
static pthread_once_t tabs_once = PTHREAD_ONCE_INIT;

static uint8_t linear_to_ulaw(int pcm)
{
    /* ITU-T G.711 mu-law: bias 0x84, clip 32635, segment = top set bit above bit 7. */
    int sign = pcm < 0 ? 0x80 : 0;
    int mag = (pcm < 0 ? -pcm : pcm);
    int exponent = 7, mask;
    if (mag > 32635)
        mag = 32635;
    mag += 0x84;
    for (mask = 0x4000; (mag & mask) == 0 && exponent > 0; mask >>= 1)
        exponent--;
    return (uint8_t)~(sign | (exponent << 4) | ((mag >> (exponent + 3)) & 0x0F));
}

static uint8_t linear_to_alaw(int pcm)
{
    /* ITU-T G.711 A-law on the 13-bit value, segments ending at 0x1F, 0x3F, ... 0xFFF. */
    static const int seg_end[8] = {0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF};
    int val = pcm >> 3, mask = 0xD5, seg, aval;
    if (val < 0) {
        mask = 0x55;
        val = -val - 1;
    }
    for (seg = 0; seg < 8 && val > seg_end[seg]; seg++)
        ;
    if (seg >= 8)
        return (uint8_t)(0x7F ^ mask);
    aval = seg << 4;
    aval |= (val >> (seg < 2 ? 1 : seg)) & 0x0F;
    return (uint8_t)(aval ^ mask);
}

static void build_tables(void)
{
    int i;
    for (i = 0; i < 65536; i++) {
        int pcm = (int)(int16_t)(uint16_t)i;
        ulaw_tab[i] = linear_to_ulaw(pcm);
        alaw_tab[i] = linear_to_alaw(pcm);
    }
}

/* Encode n bytes of little-endian PCM16 from src into n / 2 bytes of G.711 at dst. */
static void encode_g711(const uint8_t *tab, const uint8_t *src, unsigned n, uint8_t *dst)
{
    unsigned i;
    for (i = 0; i + 1 < n; i += 2)
        *dst++ = tab[(unsigned)src[i] | ((unsigned)src[i + 1] << 8)];
}

/* Take n bytes (whole frames) of caller PCM16 from the ring, in rx_codec, into dst. */
static void rx_take(ring *r, int rx_codec, uint8_t *dst, unsigned n)
{
    const uint8_t *tab;
    unsigned first;
    if (rx_codec == GW_RX_PCM16) {
        ring_get(r, dst, n);
        return;
    }
    tab = rx_codec == GW_RX_PCMA ? alaw_tab : ulaw_tab;
    first = r->cap - r->head < n ? r->cap - r->head : n;
    encode_g711(tab, r->buf + r->head, first, dst);
    encode_g711(tab, r->buf, n - first, dst + first / 2);
    r->head = (r->head + n) % r->cap;
    r->len -= n;
}

int gw_abi_version(void)
{
    pthread_once(&tabs_once, build_tables);
    return GW_ABI_VERSION;
}

/* The encoder of gw_port_exchange on its own (for tests): n bytes of PCM16 to n / 2 of
 * G.711 (codec GW_RX_PCMU or GW_RX_PCMA). Returns the bytes written, 0 for another codec. */
unsigned gw_g711_encode(int codec, const uint8_t *pcm, unsigned n, uint8_t *out)
{
    if (codec != GW_RX_PCMU && codec != GW_RX_PCMA)
        return 0;
    pthread_once(&tabs_once, build_tables);
    encode_g711(codec == GW_RX_PCMA ? alaw_tab : ulaw_tab, pcm, n - n % 2, out);
    return n / 2;
}

int gw_frame_bytes(void)
{
    return GW_FRAME_BYTES;
}

/*
 * Create a port and add it to the conference bridge (sip thread). rx_frames/tx_frames size the
 * rings. Returns NULL on failure, with *status set to the pj status.
 */
gw_port *gw_port_create(const char *name, unsigned rx_frames, unsigned tx_frames,
                        int *status)
{
    gw_port *gw;
    pj_pool_t *pool;
    pjmedia_port *port;
    struct port_data_ptr *pd;
    pj_str_t pname;
    pj_status_t st;

    *status = PJ_SUCCESS;
    if (rx_frames == 0 || tx_frames == 0) {
        *status = PJ_EINVAL;
        return NULL;
    }
    gw = (gw_port *)calloc(1, sizeof(*gw));
    if (gw == NULL) {
        *status = PJ_ENOMEM;
        return NULL;
    }
    gw->rx.cap = rx_frames * GW_FRAME_BYTES;
    gw->tx.cap = tx_frames * GW_FRAME_BYTES;
    gw->rx.buf = (uint8_t *)malloc(gw->rx.cap);
    gw->tx.buf = (uint8_t *)malloc(gw->tx.cap);
    gw->slot = PJSUA_INVALID_ID;
    pool = pjsua_pool_create("gwmedia%p", 512, 512);
    if (gw->rx.buf == NULL || gw->tx.buf == NULL || pool == NULL) {
        if (pool)
            pj_pool_release(pool);
        free(gw->rx.buf);
        free(gw->tx.buf);
        free(gw);
        *status = PJ_ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&gw->lock, NULL);
    gw->refs = 2;

    port = PJ_POOL_ZALLOC_T(pool, pjmedia_port);
    pd = PJ_POOL_ZALLOC_T(pool, struct port_data_ptr);
    pd->gw = gw;
    pd->pool = pool;
    pj_strdup2_with_null(pool, &pname, name);
    pjmedia_port_info_init(&port->info, &pname, GW_SIGNATURE, GW_CLOCK_RATE, 1, 16,
                           GW_SAMPLES_PER_FRAME);
    port->port_data.pdata = pd;
    port->put_frame = &on_put_frame;
    port->get_frame = &on_get_frame;
    port->on_destroy = &on_destroy;
    st = pjmedia_port_init_grp_lock(port, pool, NULL);
    if (st == PJ_SUCCESS)
        st = pjsua_conf_add_port(pool, port, &gw->slot);
    if (st != PJ_SUCCESS) {
        /* Nothing else holds the port yet: destroying it runs on_destroy (one reference). */
        if (port->grp_lock)
            pjmedia_port_destroy(port);
        else
            on_destroy(port);
        gw_unref(gw);
        *status = st;
        return NULL;
    }
    gw->port = port;
    return gw;
}

int gw_port_slot(gw_port *gw)
{
    return gw->slot;
}

/* Connect the port and a call's conference slot both ways (sip thread). */
int gw_port_connect(gw_port *gw, int call_slot)
{
    pj_status_t st;
    if (gw->port == NULL)
        return PJ_EINVALIDOP;
    st = pjsua_conf_connect(call_slot, gw->slot);
    if (st == PJ_SUCCESS)
        st = pjsua_conf_connect(gw->slot, call_slot);
    return st;
}

/* Take the port off the bridge and drop the pjmedia side's hold on it (sip thread; once). */
void gw_port_detach(gw_port *gw)
{
    pjmedia_port *port = gw->port;
    if (port == NULL)
        return;
    gw->port = NULL;
    pjsua_conf_remove_port(gw->slot);
    pjmedia_port_destroy(port);
}

/* Drop Python's reference (any thread; once). */
void gw_port_release(gw_port *gw)
{
    gw_unref(gw);
}

/* Barge-in: throw away every queued agent frame; returns how many. Nothing is expected after
 * it until the loop's next exchange says so, so the silence that follows is idle, not an
 * underrun. */
unsigned gw_port_tx_clear(gw_port *gw)
{
    unsigned n;
    pthread_mutex_lock(&gw->lock);
    n = gw->tx.len / GW_FRAME_BYTES;
    gw->tx.head = 0;
    gw->tx.len = 0;
    gw->busy = 0;
    gw->counters[GW_TX_CLEARED] += n;
    pthread_mutex_unlock(&gw->lock);
    return n;
}

/*
 * One exchange per event-loop tick, under one lock: write agent audio (whole frames, what
 * fits), set the busy flag, move the stored caller audio into rx_buf, and copy the counters
 * into out (GW_COUNTERS values) and the agent frames still queued into *tx_queued.
 *
 * Caller audio is taken in whole units of rx_unit frames (what is left waits for the next
 * exchange), at most what fits in rx_cap bytes, converted to rx_codec on the way out:
 * GW_RX_PCM16 as stored (320 bytes a frame), GW_RX_PCMU / GW_RX_PCMA as G.711 (160 bytes a
 * frame). Returns the bytes written to rx_buf; *tx_accepted gets the agent bytes taken.
 */
unsigned gw_port_exchange(gw_port *gw, uint8_t *rx_buf, unsigned rx_cap, int rx_codec,
                          unsigned rx_unit, const uint8_t *tx_data, unsigned tx_len, int busy,
                          uint64_t *out, unsigned *tx_accepted, unsigned *tx_queued)
{
    unsigned n, room, out_frame, unit_bytes, units;
    if (rx_codec != GW_RX_PCMU && rx_codec != GW_RX_PCMA)
        rx_codec = GW_RX_PCM16;
    if (rx_unit == 0)
        rx_unit = 1;
    out_frame = rx_codec == GW_RX_PCM16 ? GW_FRAME_BYTES : GW_FRAME_BYTES / 2;
    pthread_mutex_lock(&gw->lock);
    room = gw->tx.cap - gw->tx.len;
    n = tx_len < room ? tx_len : room;
    n -= n % GW_FRAME_BYTES;
    ring_put(&gw->tx, tx_data, n);
    *tx_accepted = n;
    gw->busy = busy != 0;
    unit_bytes = rx_unit * GW_FRAME_BYTES;
    units = gw->rx.len / unit_bytes;
    if (units > rx_cap / (rx_unit * out_frame))
        units = rx_cap / (rx_unit * out_frame);
    n = units * unit_bytes;
    rx_take(&gw->rx, rx_codec, rx_buf, n);
    memcpy(out, gw->counters, sizeof(gw->counters));
    *tx_queued = gw->tx.len / GW_FRAME_BYTES;
    pthread_mutex_unlock(&gw->lock);
    return units * rx_unit * out_frame;
}

/* Copy the counters (GW_COUNTERS values) into out; returns how many. */
unsigned gw_port_counters(gw_port *gw, uint64_t *out, unsigned cap)
{
    unsigned n = cap < GW_COUNTERS ? cap : GW_COUNTERS;
    pthread_mutex_lock(&gw->lock);
    memcpy(out, gw->counters, n * sizeof(uint64_t));
    pthread_mutex_unlock(&gw->lock);
    return n;
}

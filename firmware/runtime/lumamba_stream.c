/*
 * Framed int16 sample stream, parser and ring buffer (see lumamba_stream.h for the format).
 */
#include "lumamba_stream.h"

#include <string.h>

uint16_t lumamba_crc16_ccitt(const uint8_t *data, size_t n, uint16_t crc)
{
    size_t i;
    unsigned bit;
    for (i = 0; i < n; ++i) {
        crc = (uint16_t)(crc ^ ((uint16_t)data[i] << 8));
        for (bit = 0; bit < 8u; ++bit) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

/* ---- ring buffer ---------------------------------------------------------------------- */

void lumamba_ring_init(lumamba_ring_t *ring, int16_t *storage, uint32_t capacity, uint16_t n_channels)
{
    ring->samples = storage;
    ring->capacity = capacity;
    ring->n_channels = n_channels;
    ring->written = 0u;
}

void lumamba_ring_push(lumamba_ring_t *ring, const int16_t *instant)
{
    uint32_t w = ring->written;
    memcpy(&ring->samples[(size_t)(w % ring->capacity) * ring->n_channels], instant,
           (size_t)ring->n_channels * sizeof(int16_t));
    ring->written = w + 1u; /* after the slot: a concurrent reader never sees a half instant */
}

static int16_t ring_at(const lumamba_ring_t *ring, uint32_t instant, uint16_t channel)
{
    return ring->samples[(size_t)(instant % ring->capacity) * ring->n_channels + channel];
}

int lumamba_ring_window(const lumamba_ring_t *ring, uint32_t start, uint32_t length, int16_t *out)
{
    uint32_t written = ring->written;
    uint16_t ch;
    uint32_t t;
    if (length < 2u || length > ring->capacity) {
        return LUMAMBA_STREAM_OVERWRITTEN; /* no window of that length can ever be cut */
    }
    if ((uint32_t)(written - start) < length || (int32_t)(written - start) < 0) {
        return LUMAMBA_STREAM_NOT_READY;
    }
    if ((uint32_t)(written - start) > ring->capacity) {
        return LUMAMBA_STREAM_OVERWRITTEN;
    }
    for (ch = 0; ch < ring->n_channels; ++ch) {
        int16_t *row = out + (size_t)ch * length;
        for (t = 0; t < length; ++t) {
            row[t] = ring_at(ring, start + t, ch);
        }
    }
    /* A producer running concurrently (an ISR) may have overwritten the start while we copied. */
    if ((uint32_t)(ring->written - start) > ring->capacity) {
        return LUMAMBA_STREAM_OVERWRITTEN;
    }
    return LUMAMBA_STREAM_OK;
}

/* ---- frame parser --------------------------------------------------------------------- */

int lumamba_frame_parser_init(lumamba_frame_parser_t *parser, uint16_t n_channels)
{
    memset(parser, 0, sizeof *parser);
    if (n_channels == 0u || n_channels > LUMAMBA_STREAM_MAX_CHANNELS) {
        return -1;
    }
    parser->n_channels = n_channels;
    return 0;
}

uint32_t lumamba_frame_parser_errors(const lumamba_frame_parser_t *parser)
{
    return parser->crc_errors + parser->header_errors;
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | ((uint16_t)p[1] << 8));
}

/* A good frame: fill a sequence gap by sample-and-hold, then push its instants. */
static int accept_frame(lumamba_frame_parser_t *p, lumamba_ring_t *ring)
{
    uint16_t seq = get_u16(&p->buf[2]);
    uint8_t n_instants = p->buf[5];
    uint16_t ch;
    unsigned i;
    p->gap_frames = 0u;
    if (p->have_seq && seq != p->expected_seq) {
        uint16_t gap = (uint16_t)(seq - p->expected_seq);
        if (gap <= LUMAMBA_STREAM_MAX_GAP_FRAMES) {
            p->gap_seq = p->expected_seq;
            p->gap_frames = gap;
            p->lost_frames += gap;
            if (p->have_last && n_instants > 0u) {
                /* Lost frames are assumed as long as this one (senders use a fixed size). */
                uint32_t fill = (uint32_t)gap * n_instants;
                uint32_t k;
                for (k = 0; k < fill; ++k) {
                    lumamba_ring_push(ring, p->last);
                }
                p->filled_instants += fill;
            }
        }
    }
    p->have_seq = 1u;
    p->expected_seq = (uint16_t)(seq + 1u);
    if (n_instants == 0u) {
        return LUMAMBA_FRAME_END;
    }
    for (i = 0; i < n_instants; ++i) {
        const uint8_t *src = &p->buf[LUMAMBA_STREAM_HEADER_BYTES + 2u * (size_t)i * p->n_channels];
        for (ch = 0; ch < p->n_channels; ++ch) {
            p->last[ch] = (int16_t)get_u16(&src[2u * ch]);
        }
        lumamba_ring_push(ring, p->last);
    }
    p->have_last = 1u;
    p->frames_ok++;
    return LUMAMBA_FRAME_OK;
}

int lumamba_frame_parser_feed(lumamba_frame_parser_t *p, uint8_t byte, lumamba_ring_t *ring)
{
    if (p->pos == 0u) {
        if (byte == LUMAMBA_STREAM_SYNC0) {
            p->buf[p->pos++] = byte;
        }
        return LUMAMBA_FRAME_NONE;
    }
    if (p->pos == 1u) {
        if (byte == LUMAMBA_STREAM_SYNC1) {
            p->buf[p->pos++] = byte;
        } else {
            p->pos = (byte == LUMAMBA_STREAM_SYNC0) ? 1u : 0u; /* A5 A5 5A: resync on the second */
        }
        return LUMAMBA_FRAME_NONE;
    }
    p->buf[p->pos++] = byte;
    if (p->pos == LUMAMBA_STREAM_HEADER_BYTES) {
        uint8_t n_channels = p->buf[4];
        uint8_t n_instants = p->buf[5];
        if (n_channels != p->n_channels || n_instants > LUMAMBA_STREAM_MAX_INSTANTS) {
            p->header_errors++;
            p->pos = 0u;
            return LUMAMBA_FRAME_HEADER_ERROR;
        }
        p->need = (uint16_t)(LUMAMBA_STREAM_HEADER_BYTES + 2u * (unsigned)n_channels * n_instants +
                             LUMAMBA_STREAM_CRC_BYTES);
        return LUMAMBA_FRAME_NONE;
    }
    if (p->pos < LUMAMBA_STREAM_HEADER_BYTES || p->pos < p->need) {
        return LUMAMBA_FRAME_NONE;
    }
    p->pos = 0u;
    {
        uint16_t body = (uint16_t)(p->need - 2u - LUMAMBA_STREAM_CRC_BYTES);
        uint16_t crc = lumamba_crc16_ccitt(&p->buf[2], body, 0xFFFFu);
        if (crc != get_u16(&p->buf[p->need - LUMAMBA_STREAM_CRC_BYTES])) {
            p->crc_errors++;
            return LUMAMBA_FRAME_CRC_ERROR;
        }
    }
    return accept_frame(p, ring);
}

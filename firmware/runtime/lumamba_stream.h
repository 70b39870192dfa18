/*
 * LuMamba streaming input: a framed int16 sample protocol, its parser, and a ring buffer of the
 * latest samples from which the demo cuts its windows.
 *
 * Frame (all fields little-endian):
 *
 *   offset  size          field
 *   0       1             sync 0xA5
 *   1       1             sync 0x5A
 *   2       2             sequence number (uint16, +1 per frame, wraps)
 *   4       1             n_channels (must equal the parser's)
 *   5       1             n_instants: sample instants in this frame, 1..LUMAMBA_STREAM_MAX_INSTANTS;
 *                         0 marks the end of the stream (no payload)
 *   6       2*C*n         payload: int16 ADC counts, instant-major (all channels of instant 0, ...)
 *   6+2*C*n 2             CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of bytes 2 .. 6+2*C*n-1
 *
 * A corrupted byte fails the CRC; a dropped byte shortens a frame so that it fails the CRC too.
 * Either way the frame is discarded and the parser hunts for the next sync. The next good frame's
 * sequence number says how many frames were lost; their instants are filled with the last good
 * instant (sample-and-hold) so that later windows stay aligned in time and channels never shift.
 * Every loss is counted; nothing is dropped silently.
 *
 * Plain C99, no heap: the caller owns all storage. Single producer (the parser, or an ISR that
 * calls lumamba_ring_push) and single consumer (the window cutter) may run concurrently: the
 * producer writes a slot and only then advances `written`.
 */
#ifndef LUMAMBA_STREAM_H
#define LUMAMBA_STREAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LUMAMBA_STREAM_SYNC0 0xA5u
#define LUMAMBA_STREAM_SYNC1 0x5Au
#define LUMAMBA_STREAM_HEADER_BYTES 6u
#define LUMAMBA_STREAM_CRC_BYTES 2u

#ifndef LUMAMBA_STREAM_MAX_CHANNELS
#define LUMAMBA_STREAM_MAX_CHANNELS 64u
#endif
#ifndef LUMAMBA_STREAM_MAX_INSTANTS
#define LUMAMBA_STREAM_MAX_INSTANTS 16u
#endif
/* A gap longer than this many frames is taken as a restarted sender, not a loss: no fill. */
#ifndef LUMAMBA_STREAM_MAX_GAP_FRAMES
#define LUMAMBA_STREAM_MAX_GAP_FRAMES 256u
#endif

#define LUMAMBA_STREAM_MAX_FRAME_BYTES \
    (LUMAMBA_STREAM_HEADER_BYTES + 2u * LUMAMBA_STREAM_MAX_CHANNELS * LUMAMBA_STREAM_MAX_INSTANTS + \
     LUMAMBA_STREAM_CRC_BYTES)

/* CRC-16/CCITT-FALSE over n bytes, continuing from crc (start with 0xFFFF). */
uint16_t lumamba_crc16_ccitt(const uint8_t *data, size_t n, uint16_t crc);

/* ---- ring buffer ---------------------------------------------------------------------- */

typedef struct {
    int16_t *samples;           /* capacity * n_channels values, instant-major */
    uint32_t capacity;          /* instants */
    uint16_t n_channels;
    volatile uint32_t written;  /* instants pushed since init (monotonic, wraps after 2^32) */
} lumamba_ring_t;

void lumamba_ring_init(lumamba_ring_t *ring, int16_t *storage, uint32_t capacity, uint16_t n_channels);

/* Append one instant (n_channels counts); the oldest instant is overwritten when full. */
void lumamba_ring_push(lumamba_ring_t *ring, const int16_t *instant);

#define LUMAMBA_STREAM_OK 0
#define LUMAMBA_STREAM_NOT_READY 1    /* the window's last instant has not arrived yet */
#define LUMAMBA_STREAM_OVERWRITTEN 2  /* its first instant was overwritten (consumer too slow) */

/*
 * Copy the window of `length` instants starting at instant `start` (counted since init) into
 * `out`, channel-major (n_channels rows of `length` int16 counts: the layout
 * lumamba_infer_counts() takes, which normalises it as the model was trained). Returns
 * LUMAMBA_STREAM_OK, NOT_READY or OVERWRITTEN (then `out` is not to be used).
 */
int lumamba_ring_window(const lumamba_ring_t *ring, uint32_t start, uint32_t length, int16_t *out);

/* ---- frame parser --------------------------------------------------------------------- */

/* What a byte completed (lumamba_frame_parser_feed's return value). */
#define LUMAMBA_FRAME_NONE 0          /* inside a frame or hunting for sync */
#define LUMAMBA_FRAME_OK 1            /* a good frame; its instants are in the ring */
#define LUMAMBA_FRAME_CRC_ERROR 2     /* a frame failed its CRC and was discarded */
#define LUMAMBA_FRAME_HEADER_ERROR 3  /* a header with a wrong channel or instant count */
#define LUMAMBA_FRAME_END 4           /* the end-of-stream frame (n_instants = 0) */

typedef struct {
    uint16_t n_channels;
    uint16_t pos;               /* bytes of the current frame received */
    uint16_t need;              /* bytes the current frame has in all */
    uint16_t expected_seq;
    uint8_t have_seq;
    uint8_t have_last;
    uint8_t buf[LUMAMBA_STREAM_MAX_FRAME_BYTES];
    int16_t last[LUMAMBA_STREAM_MAX_CHANNELS];  /* last good instant, for sample-and-hold */
    /* counters */
    uint32_t frames_ok;
    uint32_t crc_errors;
    uint32_t header_errors;
    uint32_t lost_frames;       /* from sequence gaps */
    uint32_t filled_instants;   /* instants filled by sample-and-hold */
    uint32_t gap_seq;           /* first lost sequence number of the latest gap */
    uint32_t gap_frames;        /* frames lost in the latest gap (FRAME_OK with a gap sets it) */
} lumamba_frame_parser_t;

/* Returns 0, or -1 if n_channels is 0 or above LUMAMBA_STREAM_MAX_CHANNELS. */
int lumamba_frame_parser_init(lumamba_frame_parser_t *parser, uint16_t n_channels);

/* Feed one received byte; complete frames go into `ring`. Returns a LUMAMBA_FRAME_* event. */
int lumamba_frame_parser_feed(lumamba_frame_parser_t *parser, uint8_t byte, lumamba_ring_t *ring);

/* Frame errors so far: CRC and header errors plus frames lost in sequence gaps. */
uint32_t lumamba_frame_parser_errors(const lumamba_frame_parser_t *parser);

#ifdef __cplusplus
}
#endif

#endif /* LUMAMBA_STREAM_H */

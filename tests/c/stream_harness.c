/*
 * Host harness for tests/test_stream_parser.py: feeds stdin to the frame parser of
 * firmware/runtime/lumamba_stream.c and prints what it did.
 *
 *   stream_harness N_CHANNELS CAPACITY WINDOW_START WINDOW_LENGTH < bytes
 *
 * Output: "EVENT <byte offset> <event>" per event other than NONE, then
 * "COUNTERS ok crc header lost filled written", "I <instant> <counts...>" for every instant still
 * in the ring, and "WINDOW <status> <counts...>" for the requested window (channel-major).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lumamba_stream.h"

static int16_t storage[4096 * LUMAMBA_STREAM_MAX_CHANNELS];
static int16_t window[4096 * LUMAMBA_STREAM_MAX_CHANNELS];

int main(int argc, char **argv)
{
    lumamba_frame_parser_t parser;
    lumamba_ring_t ring;
    unsigned long n_channels, capacity, start, length, offset = 0, i, c;
    int byte;
    int status;
    if (argc != 5) {
        fprintf(stderr, "usage: %s N_CHANNELS CAPACITY WINDOW_START WINDOW_LENGTH\n", argv[0]);
        return 2;
    }
    n_channels = strtoul(argv[1], NULL, 10);
    capacity = strtoul(argv[2], NULL, 10);
    start = strtoul(argv[3], NULL, 10);
    length = strtoul(argv[4], NULL, 10);
    if (capacity > 4096 || lumamba_frame_parser_init(&parser, (uint16_t)n_channels) != 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    lumamba_ring_init(&ring, storage, (uint32_t)capacity, (uint16_t)n_channels);
    while ((byte = getchar()) != EOF) {
        int event = lumamba_frame_parser_feed(&parser, (uint8_t)byte, &ring);
        if (event != LUMAMBA_FRAME_NONE) {
            printf("EVENT %lu %d\n", offset, event);
        }
        ++offset;
    }
    printf("COUNTERS %lu %lu %lu %lu %lu %lu\n", (unsigned long)parser.frames_ok, (unsigned long)parser.crc_errors,
           (unsigned long)parser.header_errors, (unsigned long)parser.lost_frames,
           (unsigned long)parser.filled_instants, (unsigned long)ring.written);
    for (i = ring.written > capacity ? ring.written - capacity : 0; i < ring.written; ++i) {
        printf("I %lu", i);
        for (c = 0; c < n_channels; ++c) {
            printf(" %d", storage[(i % capacity) * n_channels + c]);
        }
        printf("\n");
    }
    status = lumamba_ring_window(&ring, (uint32_t)start, (uint32_t)length, window);
    printf("WINDOW %d", status);
    if (status == LUMAMBA_STREAM_OK) {
        for (i = 0; i < n_channels * length; ++i) {
            printf(" %d", window[i]);
        }
    }
    printf("\n");
    return 0;
}

/*
 * Demo application: continuous EEG in, one decision per hop out, forever.
 *
 * int16 ADC counts arrive as frames (lumamba_stream.h) over the board's input (demo_io.h: the
 * UART on the emulated boards), go into a ring buffer of the latest instants, and every
 * LUMAMBA_STREAM_HOP instants the window of the latest LUMAMBA_N_SAMPLES of them is copied, still
 * int16 counts, into lumamba_counts_buffer() (inside the model's arena: the window costs no RAM of
 * its own), and lumamba_infer_counts() runs the model on it: counts times LUMAMBA_ADC_UV_PER_COUNT are microvolts, normalised on the device exactly
 * as the model was trained (model.h's LUMAMBA_NORMALISATION: per-window z-score, robust or
 * fixed scale). The filtering, resampling to LUMAMBA_STREAM_SFREQ and the montage happen before
 * the samples are sent: in the analogue front end on a wearable, on the host for lumamba-stream.
 *
 * Build-time settings (make demo-app DEMO_DEFINES="-D...=..."):
 *   LUMAMBA_STREAM_SFREQ          sampling rate in Hz (default 256, the model's)
 *   LUMAMBA_STREAM_HOP            instants between decisions (default one second)
 *   LUMAMBA_ADC_UV_PER_COUNT      microvolts per ADC count: the board profile's adc.uv_per_count,
 *                                 which the project's make files pass (required; no default, so
 *                                 that a build never assumes a scale its front end does not have)
 *   LUMAMBA_STREAM_RING_INSTANTS  ring capacity (default window + hop: the model may take up to
 *                                 two hops per window before an instant is overwritten)
 * and from a chip's make fragment (CHIP_DEMO_DEFINES), where the ring needs memory of its own:
 *   LUMAMBA_RING_SECTION          linker section of the ring's storage (e.g. ".ccm", the
 *                                 STM32F407's core-coupled RAM, so the arena keeps the SRAM)
 *   LUMAMBA_RING_MAX_BYTES        that section's size: the default capacity is cut to fit it
 *                                 (then the model has hop + capacity - window instants per window)
 *
 * Output (printf: semihosting on the emulated boards, the board's putc on real chips), one
 * record per line, key=value fields; lumamba.stream.protocol parses them:
 *   STREAM channels= window= hop= sfreq= classes= uv_per_count=<float32 hex> ring=
 *   DECISION window=<k> start=<first instant> class=<argmax> logits=<hex>,<hex>,...
 *            insns=<n> (cycles= on Cortex-M silicon) overruns=<n> frame_errors=<n> lost_frames=<n>
 *            [status=<name> instead of class/logits when lumamba_infer_counts() failed]
 *   FRAMEERR kind=crc|header count=<n>        a frame was discarded
 *   FRAMEGAP seq=<first lost> frames=<n> filled=<instants>   frames never arrived; filled by
 *                                             sample-and-hold so that time stays aligned
 *   OVERRUN window=<k> skipped=<n>            windows whose instants were overwritten
 *   END windows=<n> decisions=<n> frames=<n> frame_errors=<n> lost_frames=<n> overruns=<n>
 * A logit is its IEEE-754 bit pattern, so the host compares exactly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demo_io.h"
#include "lumamba_runtime.h"
#include "lumamba_stream.h"
#include "model.h"

#ifndef LUMAMBA_STREAM_SFREQ
#define LUMAMBA_STREAM_SFREQ 256
#endif
#ifndef LUMAMBA_STREAM_HOP
#define LUMAMBA_STREAM_HOP LUMAMBA_STREAM_SFREQ
#endif
#ifndef LUMAMBA_ADC_UV_PER_COUNT
#error "define LUMAMBA_ADC_UV_PER_COUNT (microvolts per int16 count): the board profile's adc.uv_per_count, which firmware/boards/<board>.mk and chips/<chip>.mk pass"
#endif
#ifndef LUMAMBA_STREAM_RING_INSTANTS
#if defined(LUMAMBA_RING_MAX_BYTES) && \
    (LUMAMBA_N_SAMPLES + LUMAMBA_STREAM_HOP) * 2u * LUMAMBA_N_CHANNELS > LUMAMBA_RING_MAX_BYTES
#define LUMAMBA_STREAM_RING_INSTANTS (LUMAMBA_RING_MAX_BYTES / (2u * LUMAMBA_N_CHANNELS))
#else
#define LUMAMBA_STREAM_RING_INSTANTS (LUMAMBA_N_SAMPLES + LUMAMBA_STREAM_HOP)
#endif
#endif
#ifdef LUMAMBA_RING_SECTION
#define RING_STORAGE_PLACEMENT __attribute__((section(LUMAMBA_RING_SECTION)))
#else
#define RING_STORAGE_PLACEMENT
#endif

typedef char lumamba_check_hop_positive[(LUMAMBA_STREAM_HOP > 0) ? 1 : -1];
typedef char lumamba_check_ring_holds_window[(LUMAMBA_STREAM_RING_INSTANTS >= LUMAMBA_N_SAMPLES) ? 1 : -1];
#ifdef LUMAMBA_RING_MAX_BYTES
typedef char lumamba_check_ring_fits_its_section[
    ((size_t)LUMAMBA_STREAM_RING_INSTANTS * 2u * LUMAMBA_N_CHANNELS <= LUMAMBA_RING_MAX_BYTES) ? 1 : -1];
#endif
typedef char lumamba_check_channels_fit_frames[(LUMAMBA_N_CHANNELS <= LUMAMBA_STREAM_MAX_CHANNELS) ? 1 : -1];

#if (defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M') && !defined(LUMAMBA_QEMU_ICOUNT_SHIFT)
#define COUNTER_NAME "cycles" /* SysTick counts core clock cycles on silicon */
#else
#define COUNTER_NAME "insns"
#endif

static int16_t s_ring_storage[(size_t)LUMAMBA_STREAM_RING_INSTANTS * LUMAMBA_N_CHANNELS] RING_STORAGE_PLACEMENT;
static float s_logits[LUMAMBA_N_CLASSES];
static int16_t s_adc[LUMAMBA_STREAM_MAX_INSTANTS * LUMAMBA_N_CHANNELS];
static lumamba_ring_t s_ring;
static lumamba_frame_parser_t s_parser;

static unsigned long float_bits(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return (unsigned long)bits;
}

static unsigned argmax(const float *x, unsigned n)
{
    unsigned best = 0u;
    unsigned i;
    for (i = 1u; i < n; ++i) {
        if (x[i] > x[best]) {
            best = i;
        }
    }
    return best;
}

static unsigned long overruns_total(unsigned long ring_overruns)
{
    return ring_overruns + (unsigned long)lumamba_board_input_overruns();
}

/* Read input until one frame completes (or none is waiting); returns 1 at the end of stream. */
static int poll_input(void)
{
    uint8_t byte;
    size_t n = lumamba_board_read_samples(s_adc, LUMAMBA_STREAM_MAX_INSTANTS, LUMAMBA_N_CHANNELS);
    size_t i;
    for (i = 0; i < n; ++i) {
        lumamba_ring_push(&s_ring, &s_adc[i * LUMAMBA_N_CHANNELS]);
    }
    while (lumamba_board_read_byte(&byte)) {
        int event = lumamba_frame_parser_feed(&s_parser, byte, &s_ring);
        if (event == LUMAMBA_FRAME_CRC_ERROR || event == LUMAMBA_FRAME_HEADER_ERROR) {
            printf("FRAMEERR kind=%s count=%lu\n", event == LUMAMBA_FRAME_CRC_ERROR ? "crc" : "header",
                   (unsigned long)lumamba_frame_parser_errors(&s_parser));
            fflush(stdout);
        }
        if ((event == LUMAMBA_FRAME_OK || event == LUMAMBA_FRAME_END) && s_parser.gap_frames != 0u) {
            printf("FRAMEGAP seq=%lu frames=%lu filled=%lu\n", (unsigned long)s_parser.gap_seq,
                   (unsigned long)s_parser.gap_frames, (unsigned long)s_parser.filled_instants);
            fflush(stdout);
        }
        if (event == LUMAMBA_FRAME_END) {
            return 1;
        }
        if (event == LUMAMBA_FRAME_OK) {
            return 0; /* let the caller check for a complete window */
        }
    }
    return 0;
}

int main(void)
{
    uint32_t next_start = 0u;
    unsigned long index = 0u;
    unsigned long ring_overruns = 0u;
    unsigned long decisions = 0u;
    int ended = 0;
    int status;

    printf("STREAM channels=%u window=%u hop=%u sfreq=%u classes=%u uv_per_count=%08lx ring=%lu\n",
           (unsigned)LUMAMBA_N_CHANNELS, (unsigned)LUMAMBA_N_SAMPLES, (unsigned)LUMAMBA_STREAM_HOP,
           (unsigned)LUMAMBA_STREAM_SFREQ, (unsigned)LUMAMBA_N_CLASSES,
           float_bits(LUMAMBA_ADC_UV_PER_COUNT), (unsigned long)LUMAMBA_STREAM_RING_INSTANTS);
    fflush(stdout); /* line records: a host reading a pipe waits for each */
    status = lumamba_init();
    if (status != LUMAMBA_OK) {
        printf("INIT %d %s\n", status, lumamba_status_name(status));
        return status;
    }
    lumamba_ring_init(&s_ring, s_ring_storage, LUMAMBA_STREAM_RING_INSTANTS, LUMAMBA_N_CHANNELS);
    (void)lumamba_frame_parser_init(&s_parser, LUMAMBA_N_CHANNELS);
    lumamba_board_input_init();

    for (;;) {
        int cut;
        if (!ended) {
            ended = poll_input();
        }
        cut = lumamba_ring_window(&s_ring, next_start, LUMAMBA_N_SAMPLES, lumamba_counts_buffer());
        if (cut == LUMAMBA_STREAM_OVERWRITTEN) {
            /* The model fell behind by more than the ring's slack: skip to the newest window
             * that is still whole, and say how many were lost. */
            unsigned long skipped = 0u;
            while ((uint32_t)(s_ring.written - next_start) > LUMAMBA_STREAM_RING_INSTANTS) {
                next_start += LUMAMBA_STREAM_HOP;
                ++skipped;
            }
            ring_overruns += skipped;
            printf("OVERRUN window=%lu skipped=%lu\n", index, skipped);
            fflush(stdout);
            index += skipped;
            continue;
        }
        if (cut == LUMAMBA_STREAM_NOT_READY) {
            if (ended) {
                break;
            }
            continue;
        }
        {
            uint64_t count;
            unsigned c;
            lumamba_counter_start();
            status = lumamba_infer_counts(lumamba_counts_buffer(), LUMAMBA_ADC_UV_PER_COUNT, s_logits);
            count = lumamba_counter_read();
            printf("DECISION window=%lu start=%lu", index, (unsigned long)next_start);
            if (status == LUMAMBA_OK) {
                printf(" class=%u logits=", argmax(s_logits, LUMAMBA_N_CLASSES));
                for (c = 0; c < LUMAMBA_N_CLASSES; ++c) {
                    printf(c ? ",%08lx" : "%08lx", float_bits(s_logits[c]));
                }
            } else {
                printf(" status=%s", lumamba_status_name(status));
            }
            printf(" " COUNTER_NAME "=%llu overruns=%lu frame_errors=%lu lost_frames=%lu\n",
                   (unsigned long long)count, overruns_total(ring_overruns),
                   (unsigned long)lumamba_frame_parser_errors(&s_parser),
                   (unsigned long)s_parser.lost_frames);
            fflush(stdout);
            next_start += LUMAMBA_STREAM_HOP;
            ++index;
            ++decisions;
        }
    }
    printf("END windows=%lu decisions=%lu frames=%lu frame_errors=%lu lost_frames=%lu overruns=%lu\n",
           index, decisions,
           (unsigned long)s_parser.frames_ok, (unsigned long)lumamba_frame_parser_errors(&s_parser),
           (unsigned long)s_parser.lost_frames, overruns_total(ring_overruns));
    fflush(stdout);
    return 0;
}

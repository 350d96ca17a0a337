/*
 * cnn_digits.h: the C interface of libcnn_digits_c.a, the digits classifier of
 * examples/digits.rs (weights models/digits.safetensors) built as a `no_std` Rust static
 * library.
 *
 *   input(1, 8, 8)
 *   conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
 *
 * The weights are read-only data inside the library. Nothing here allocates, uses threads, or
 * calls the C library except `abort` (only on a panic, which would be a bug: every bad argument
 * is an error code) and `memcpy`/`memset`/`memmove`, which compilers may emit for copies. The
 * functions keep no state: concurrent calls are fine as long as each has its own workspace.
 *
 * Build: `cargo build --release` in embedded/digits-c, then link
 * $CARGO_TARGET_DIR/release/libcnn_digits_c.a (embedded/run.sh does both).
 */
#ifndef CNN_DIGITS_H
#define CNN_DIGITS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One image: 1 channel of 8 x 8 floats, row-major, grey levels in [0, 1] as in training. */
#define CNN_DIGITS_INPUT_LEN 64
/* The classes 0 to 9. */
#define CNN_DIGITS_CLASSES 10
/*
 * The floats of scratch memory one classification needs (the network's exact figure from its
 * compile-time plan; the library does not compile if this line disagrees with it).
 */
#define CNN_DIGITS_WORKSPACE_LEN 19520

/* Error codes of cnn_digits_classify (always negative). */
/* `image` or `workspace` is null or not aligned for float, or the two overlap. */
#define CNN_DIGITS_ERR_POINTER (-1)
/* `len` is not CNN_DIGITS_INPUT_LEN. */
#define CNN_DIGITS_ERR_INPUT_LEN (-2)
/* `ws_len` is less than CNN_DIGITS_WORKSPACE_LEN. */
#define CNN_DIGITS_ERR_WORKSPACE_LEN (-3)
/* Any other error of the network (none is expected; kept so that new ones have a code). */
#define CNN_DIGITS_ERR_OTHER (-4)

/* CNN_DIGITS_INPUT_LEN, for a program that wants to check the header it was compiled with. */
size_t cnn_digits_input_len(void);

/* CNN_DIGITS_WORKSPACE_LEN, likewise. */
size_t cnn_digits_workspace_len(void);

/*
 * Classifies one image.
 *
 * image:     `len` floats, the image (CNN_DIGITS_INPUT_LEN of them); only read.
 * workspace: `ws_len` floats of scratch memory, at least CNN_DIGITS_WORKSPACE_LEN; its contents
 *            on entry do not matter and on return mean nothing. It must not overlap `image`.
 *
 * Returns the class, 0 to 9: the index of the largest of the 10 logits, compared by IEEE 754
 * totalOrder (so a NaN logit counts, and -0.0 < +0.0); if several are equally largest, the
 * LAST of them (as `Iterator::max_by` in examples/digits.rs). Returns a negative
 * CNN_DIGITS_ERR_* code, having written nothing, if an argument is wrong.
 */
int32_t cnn_digits_classify(const float *image, size_t len, float *workspace, size_t ws_len);

/* A static, NUL-terminated English description of a code returned by cnn_digits_classify. */
const char *cnn_digits_strerror(int32_t code);

#ifdef __cplusplus
}
#endif

#endif /* CNN_DIGITS_H */

/*
 * digits-c: classifies the test split of the digits example with libcnn_digits_c.a, the
 * `no_std` Rust build of the same network, and prints one predicted class per line on stdout
 * (what `cargo run --release --example digits -- --predictions` prints), then on stderr how many
 * equal the labels and PyTorch's predictions stored in the file.
 *
 *   digits-c models/digits_test.safetensors
 *
 * The file is safetensors: an 8-byte little-endian header length N, N bytes of JSON naming each
 * tensor's dtype, shape and data_offsets (relative to the data after the header), then the data,
 * little-endian. The reader below parses that JSON for real (any key order, any extra keys,
 * `__metadata__`, whitespace) and rejects anything it does not understand, with a message.
 *
 * Only reading the file uses malloc; the network's workspace is a static array, sized by the
 * header's CNN_DIGITS_WORKSPACE_LEN and checked against the library at startup.
 */
#include <errno.h>
#include <float.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn_digits.h"

_Static_assert(sizeof(float) == 4 && FLT_RADIX == 2 && FLT_MANT_DIG == 24 && FLT_MAX_EXP == 128,
               "float must be IEEE 754 binary32, as the file's F32 data");
_Static_assert(CNN_DIGITS_INPUT_LEN == 1 * 8 * 8, "the images are [1, 8, 8]");

/* The network's scratch memory: no malloc, no stack frame of its size. */
static float workspace[CNN_DIGITS_WORKSPACE_LEN];

static const char *program = "digits-c";

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", program);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* ---- the file ---- */

/* Reads the whole file into a malloc'd buffer. */
static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) die("out of memory");
    for (;;) {
        if (len == cap) {
            if (cap > SIZE_MAX / 2) die("%s is too large", path);
            cap *= 2;
            unsigned char *bigger = realloc(buf, cap);
            if (!bigger) die("out of memory reading %s", path);
            buf = bigger;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) die("cannot read %s: %s", path, strerror(errno));
    fclose(f);
    *size = len;
    return buf;
}

static uint64_t le_u64(const unsigned char *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

static float le_f32(const unsigned char *b) {
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static int64_t le_i64(const unsigned char *b) {
    uint64_t u = le_u64(b);
    int64_t v;
    memcpy(&v, &u, sizeof v); /* two's complement, as every C compiler here */
    return v;
}

/* ---- a small JSON reader, enough for a safetensors header ---- */

struct json {
    const char *p, *end;
    const char *start; /* for error offsets */
};

#define MAX_RANK 8
#define MAX_DEPTH 32

static void json_die(const struct json *j, const char *what) {
    die("safetensors header, byte %ld: %s", (long)(j->p - j->start), what);
}

static void skip_ws(struct json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* Consumes `c` after optional whitespace, or returns 0 without consuming. */
static int accept(struct json *j, char c) {
    skip_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return 1;
    }
    return 0;
}

static void expect(struct json *j, char c) {
    if (!accept(j, c)) {
        char msg[32];
        snprintf(msg, sizeof msg, "expected '%c'", c);
        json_die(j, msg);
    }
}

/*
 * A string: sets *s and *len to its raw bytes between the quotes (escapes left as written, so a
 * key spelled with escapes does not match a plain name; safetensors writers do not escape
 * ASCII names).
 */
static void string(struct json *j, const char **s, size_t *len) {
    expect(j, '"');
    const char *begin = j->p;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) json_die(j, "control character in a string");
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end) break;
        }
        j->p++;
    }
    if (j->p >= j->end) json_die(j, "unterminated string");
    *s = begin;
    *len = (size_t)(j->p - begin);
    j->p++;
}

static int string_is(const char *s, size_t len, const char *want) {
    return len == strlen(want) && memcmp(s, want, len) == 0;
}

/* A non-negative integer without sign, fraction or exponent, as shapes and offsets are. */
static uint64_t unsigned_int(struct json *j) {
    skip_ws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') json_die(j, "expected an unsigned integer");
    if (*j->p == '0' && j->p + 1 < j->end && j->p[1] >= '0' && j->p[1] <= '9')
        json_die(j, "leading zero in a number");
    uint64_t v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        unsigned d = (unsigned)(*j->p - '0');
        if (v > (UINT64_MAX - d) / 10) json_die(j, "integer overflows 64 bits");
        v = v * 10 + d;
        j->p++;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        json_die(j, "expected an integer, found a fraction or exponent");
    return v;
}

/* Skips any JSON value (for keys this program does not use, e.g. __metadata__). */
static void skip_value(struct json *j, int depth) {
    if (depth > MAX_DEPTH) json_die(j, "nested too deeply");
    skip_ws(j);
    if (j->p >= j->end) json_die(j, "expected a value");
    const char *s;
    size_t len;
    switch (*j->p) {
    case '"':
        string(j, &s, &len);
        return;
    case '{':
        j->p++;
        if (accept(j, '}')) return;
        do {
            string(j, &s, &len);
            expect(j, ':');
            skip_value(j, depth + 1);
        } while (accept(j, ','));
        expect(j, '}');
        return;
    case '[':
        j->p++;
        if (accept(j, ']')) return;
        do skip_value(j, depth + 1);
        while (accept(j, ','));
        expect(j, ']');
        return;
    default: {
        static const char *const words[] = {"true", "false", "null"};
        for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
            size_t n = strlen(words[i]);
            if ((size_t)(j->end - j->p) >= n && memcmp(j->p, words[i], n) == 0) {
                j->p += n;
                return;
            }
        }
        /* A number: sign, digits, fraction, exponent; validated loosely but never unbounded. */
        const char *begin = j->p;
        while (j->p < j->end && *j->p && strchr("+-0123456789.eE", *j->p)) j->p++;
        if (j->p == begin) json_die(j, "expected a value");
        return;
    }
    }
}

struct tensor {
    const char *name;
    const char *dtype;  /* the dtype required, e.g. "F32" */
    size_t elem_size;   /* its bytes per element */
    int found;
    size_t rank;
    uint64_t shape[MAX_RANK];
    uint64_t begin, end; /* data_offsets */
};

/* Parses a tensor's entry {"dtype": …, "shape": […], "data_offsets": [b, e]} into t. */
static void tensor_entry(struct json *j, struct tensor *t) {
    int has_dtype = 0, has_shape = 0, has_offsets = 0;
    expect(j, '{');
    if (!accept(j, '}')) {
        do {
            const char *key;
            size_t key_len;
            string(j, &key, &key_len);
            expect(j, ':');
            if (string_is(key, key_len, "dtype")) {
                if (has_dtype++) json_die(j, "duplicate dtype");
                const char *s;
                size_t len;
                string(j, &s, &len);
                if (!string_is(s, len, t->dtype))
                    die("tensor %s: dtype %.*s, expected %s", t->name, (int)len, s, t->dtype);
            } else if (string_is(key, key_len, "shape")) {
                if (has_shape++) json_die(j, "duplicate shape");
                expect(j, '[');
                t->rank = 0;
                if (!accept(j, ']')) {
                    do {
                        if (t->rank == MAX_RANK) json_die(j, "shape has too many dimensions");
                        t->shape[t->rank++] = unsigned_int(j);
                    } while (accept(j, ','));
                    expect(j, ']');
                }
            } else if (string_is(key, key_len, "data_offsets")) {
                if (has_offsets++) json_die(j, "duplicate data_offsets");
                expect(j, '[');
                t->begin = unsigned_int(j);
                expect(j, ',');
                t->end = unsigned_int(j);
                expect(j, ']');
            } else {
                skip_value(j, 1);
            }
        } while (accept(j, ','));
        expect(j, '}');
    }
    if (!has_dtype || !has_shape || !has_offsets)
        die("tensor %s: entry lacks dtype, shape or data_offsets", t->name);
}

/*
 * Parses the header and fills each of `tensors` (which must all be present); checks that each
 * one's data_offsets lie within the `data_len` bytes of data and hold exactly its shape.
 */
static void parse_header(const char *text, size_t len, struct tensor *tensors, size_t n,
                         uint64_t data_len) {
    struct json j = {text, text + len, text};
    expect(&j, '{');
    if (!accept(&j, '}')) {
        do {
            const char *key;
            size_t key_len;
            string(&j, &key, &key_len);
            expect(&j, ':');
            struct tensor *t = NULL;
            for (size_t i = 0; i < n; i++)
                if (string_is(key, key_len, tensors[i].name)) t = &tensors[i];
            if (t) {
                if (t->found++) die("tensor %s appears twice in the header", t->name);
                tensor_entry(&j, t);
            } else {
                skip_value(&j, 1);
            }
        } while (accept(&j, ','));
        expect(&j, '}');
    }
    skip_ws(&j); /* writers pad the header with spaces to a multiple of 8 */
    if (j.p != j.end) json_die(&j, "text after the header's object");

    for (size_t i = 0; i < n; i++) {
        struct tensor *t = &tensors[i];
        if (!t->found) die("the file has no tensor %s", t->name);
        uint64_t bytes = t->elem_size;
        for (size_t d = 0; d < t->rank; d++) {
            if (t->shape[d] != 0 && bytes > UINT64_MAX / t->shape[d])
                die("tensor %s: shape overflows", t->name);
            bytes *= t->shape[d];
        }
        if (t->begin > t->end || t->end > data_len)
            die("tensor %s: data_offsets [%llu, %llu] outside the %llu bytes of data", t->name,
                (unsigned long long)t->begin, (unsigned long long)t->end,
                (unsigned long long)data_len);
        if (t->end - t->begin != bytes)
            die("tensor %s: data_offsets hold %llu bytes, its shape %llu", t->name,
                (unsigned long long)(t->end - t->begin), (unsigned long long)bytes);
    }
}

/* ---- main ---- */

int main(int argc, char **argv) {
    if (argc > 0 && argv[0][0]) program = argv[0];
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIGITS_TEST.safetensors\n", program);
        return 2;
    }
    /* The header this file was compiled with must describe the library it is linked with. */
    if (cnn_digits_input_len() != CNN_DIGITS_INPUT_LEN)
        die("library takes %zu floats per image, cnn_digits.h says %d", cnn_digits_input_len(),
            CNN_DIGITS_INPUT_LEN);
    if (cnn_digits_workspace_len() > sizeof workspace / sizeof *workspace)
        die("library needs a workspace of %zu floats, this program has %zu",
            cnn_digits_workspace_len(), sizeof workspace / sizeof *workspace);

    size_t size;
    unsigned char *file = read_file(argv[1], &size);
    if (size < 8) die("%s: shorter than a safetensors header length", argv[1]);
    uint64_t header_len = le_u64(file);
    if (header_len > size - 8) die("%s: header length %llu beyond the end of the file", argv[1],
                                   (unsigned long long)header_len);
    const unsigned char *data = file + 8 + header_len;
    uint64_t data_len = size - 8 - header_len;

    struct tensor tensors[] = {
        {.name = "images", .dtype = "F32", .elem_size = 4},
        {.name = "labels", .dtype = "I64", .elem_size = 8},
        {.name = "predictions", .dtype = "I64", .elem_size = 8},
    };
    struct tensor *images = &tensors[0], *labels = &tensors[1], *torch = &tensors[2];
    parse_header((const char *)file + 8, header_len, tensors, 3, data_len);

    if (images->rank != 4 || images->shape[1] != 1 || images->shape[2] != 8 ||
        images->shape[3] != 8)
        die("images: shape is not [N, 1, 8, 8]");
    uint64_t n = images->shape[0];
    if (labels->rank != 1 || labels->shape[0] != n || torch->rank != 1 || torch->shape[0] != n)
        die("labels and predictions must have shape [%llu]", (unsigned long long)n);

    uint64_t correct = 0, agree = 0;
    float image[CNN_DIGITS_INPUT_LEN];
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *pixels = data + images->begin + i * sizeof image;
        for (size_t k = 0; k < CNN_DIGITS_INPUT_LEN; k++) image[k] = le_f32(pixels + 4 * k);
        int32_t class = cnn_digits_classify(image, CNN_DIGITS_INPUT_LEN, workspace,
                                            sizeof workspace / sizeof *workspace);
        if (class < 0) die("image %llu: %s", (unsigned long long)i, cnn_digits_strerror(class));
        printf("%d\n", (int)class);
        correct += class == le_i64(data + labels->begin + 8 * i);
        agree += class == le_i64(data + torch->begin + 8 * i);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) die("cannot write the predictions: %s",
                                                   strerror(errno));
    fprintf(stderr, "%llu images: %llu correct, %llu/%llu predictions equal PyTorch's\n",
            (unsigned long long)n, (unsigned long long)correct, (unsigned long long)agree,
            (unsigned long long)n);
    free(file);
    return 0;
}

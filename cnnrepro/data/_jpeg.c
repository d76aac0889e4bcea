/* Region decoding and a window resampler for the loaders (issue 15): cnnrepro.data._jpeg.
 *
 * Why our own extension: libjpeg-turbo can decode only the MCU rows and columns around a crop
 * (jpeg_crop_scanline, jpeg_skip_scanlines), but no maintained PyPI binding exposes it
 * (docs/performance.md), and ctypes cannot call libjpeg safely: it reports errors by longjmp out of
 * a callback. Debian's libjpeg62-turbo(-dev) provides the library and its headers.
 *
 * What the model sees must not change with speed, so both halves reproduce a reference exactly:
 * - decode_region: libjpeg-turbo with PIL's decoder settings (accurate integer IDCT, fancy
 *   upsampling, RGB out); the caller asks for a few pixels more than it needs on every side,
 *   because chroma upsampling at a decoded region's edge differs from the full decode.
 * - the resampler is PIL's antialiased bilinear resize (Pillow 13's libImaging/Resample.c: the
 *   same coefficients in double, the same 22-bit fixed point, its two passes in its order, each
 *   rounded to uint8), computed only for the output window a crop keeps. So "resize the whole
 *   image to S, then crop" (torchvision's Resize + crop on a PIL image) costs a window, not a
 *   whole image; "crop a box, then resize it" (RandomResizedCrop) reads nothing outside the box.
 *   tests/data/test_region_decode.py checks both against PIL on real photographs.
 *
 * Decoding and resampling run without the GIL. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

/* pixels decoded around a region, beyond what the resampler reads: libjpeg-turbo's fancy chroma
 * upsampling treats a cropped region's edge as an image edge, which changes the outermost
 * 1-2 columns (the probe in benchmarks/region_decode_probe.py: bit-identical from 2 px on) */
#define MARGIN 4
#define PRECISION_BITS (32 - 8 - 2) /* PIL's fixed point for 8-bit images */
#define ERRLEN 256

typedef struct {
    unsigned char *pixels; /* RGB rows of w * 3 bytes */
    int x, y, w, h;        /* where the rows sit in the full image */
} Region;

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int warnings;
} ErrorManager;

static void on_error(j_common_ptr cinfo) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    /* a recoverable warning (corrupt data) fails the decode after the fact: the caller falls back
     * to PIL, which decides whether the file is usable (as the full-decode path does) */
    if (level < 0 && err->warnings++ == 0) (*cinfo->err->format_message)(cinfo, err->message);
}

/* Where decoded rows go when they are not kept: called with CHUNK rows at a time (fewer at the
 * end), as libjpeg-turbo produces them, so the horizontal pass reads them while they are in cache. */
typedef struct RowSink RowSink;
struct RowSink {
    void (*take)(RowSink *self, const unsigned char *rows, int first, int n, int x, int width);
};
#define CHUNK 16

/* Decode rows [y, y+h) and at least columns [x, x+w) of a JPEG to RGB, into out (sink NULL) or,
 * CHUNK rows at a time, to the sink. No GIL is needed. */
static int decode_region(const unsigned char *data, size_t size, int x, int y, int w, int h, Region *out,
                         char *err, RowSink *sink) {
    struct jpeg_decompress_struct cinfo;
    ErrorManager jerr;
    unsigned char *volatile pixels = NULL;
    JSAMPROW *volatile rows = NULL;
    JDIMENSION xoff, width;
    int done = 0, i;

    /* A region decode stops at the region's last row, so it cannot see a file cut below it; the
     * whole-file path would (PIL refuses a truncated JPEG, and the loader counts it as corrupt).
     * So a file must end with its end-of-image marker (trailing zero bytes aside), else the
     * caller decodes it whole and that path decides: the same verdict whatever the crop. */
    {
        size_t end = size;
        while (end > 2 && data[end - 1] == 0) end--;
        if (end < 4 || data[end - 2] != 0xFF || data[end - 1] != 0xD9) {
            snprintf(err, ERRLEN, "no end-of-image marker (a truncated file, or data after the image)");
            return 0;
        }
    }
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = on_error;
    jerr.pub.emit_message = on_message;
    jerr.warnings = 0;
    jerr.message[0] = 0;
    if (setjmp(jerr.jump)) {
        snprintf(err, ERRLEN, "libjpeg: %s", jerr.message);
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(rows);
        return 0;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        snprintf(err, ERRLEN, "CMYK JPEG: libjpeg-turbo does not convert it to RGB");
        jpeg_destroy_decompress(&cinfo);
        return 0;
    }
    if (x < 0 || y < 0 || w <= 0 || h <= 0 || (JDIMENSION)(x + w) > cinfo.image_width ||
        (JDIMENSION)(y + h) > cinfo.image_height) {
        snprintf(err, ERRLEN, "region %dx%d at (%d, %d) is outside the %ux%u image", w, h, x, y, cinfo.image_width,
                 cinfo.image_height);
        jpeg_destroy_decompress(&cinfo);
        return 0;
    }
    /* PIL's JPEG decoder: RGB out, libjpeg's defaults for the IDCT (accurate integer) and
     * upsampling (fancy), set here explicitly */
    cinfo.out_color_space = JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);
    xoff = (JDIMENSION)x;
    width = (JDIMENSION)w;
    if (width < cinfo.output_width) jpeg_crop_scanline(&cinfo, &xoff, &width); /* widened to whole iMCUs */
    {
        int kept = sink ? CHUNK : h;
        pixels = malloc((size_t)width * (size_t)kept * 3);
        rows = malloc((size_t)kept * sizeof(JSAMPROW));
        if (!pixels || !rows) {
            snprintf(err, ERRLEN, "out of memory for a %ux%d region", width, h);
            jpeg_destroy_decompress(&cinfo);
            free(pixels);
            free(rows);
            return 0;
        }
        for (i = 0; i < kept; i++) rows[i] = pixels + (size_t)i * width * 3;
    }
    if (y > 0 && jpeg_skip_scanlines(&cinfo, (JDIMENSION)y) != (JDIMENSION)y) {
        snprintf(err, ERRLEN, "libjpeg skipped fewer than %d rows", y);
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(rows);
        return 0;
    }
    while (done < h) {
        if (sink) { /* fill a chunk, hand it over */
            int got = 0, want = h - done < CHUNK ? h - done : CHUNK;
            while (got < want) {
                JDIMENSION n = jpeg_read_scanlines(&cinfo, rows + got, (JDIMENSION)(want - got));
                if (n == 0) break;
                got += (int)n;
            }
            if (got) sink->take(sink, pixels, y + done, got, (int)xoff, (int)width);
            done += got;
            if (got < want) break;
        } else {
            JDIMENSION n = jpeg_read_scanlines(&cinfo, rows + done, (JDIMENSION)(h - done));
            if (n == 0) break;
            done += (int)n;
        }
    }
    /* the rows below the region are never decoded: destroying the decompressor abandons them */
    jpeg_destroy_decompress(&cinfo);
    free(rows);
    if (done < h || jerr.warnings) {
        snprintf(err, ERRLEN, "libjpeg: %s", jerr.warnings ? jerr.message : "fewer rows than the header says");
        free(pixels);
        return 0;
    }
    if (sink) {
        free(pixels);
        pixels = NULL;
    }
    out->pixels = pixels;
    out->x = (int)xoff;
    out->y = y;
    out->w = (int)width;
    out->h = h;
    return 1;
}

/* PIL's bilinear coefficients (Resample.c: precompute_coeffs, then normalize_coeffs_8bpc) of a
 * resize from in_size to out_size, for the n output positions from o0 on. */
typedef struct {
    int ksize;
    int *bounds; /* per output position: first input index, number of taps */
    int *kk;     /* ksize fixed-point weights per output position */
    void *plan;  /* horizontal: the AVX2 pass's tables (build_hplan), one allocation; or NULL */
} Coeffs;

static double bilinear(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static int coeffs(int in_size, int out_size, int o0, int n, Coeffs *c) {
    /* PIL passes the box as floats: (float)in_size - 0.0f is exact below 2^24 */
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale, ss = 1.0 / filterscale; /* bilinear support: 1 */
    int ksize = (int)ceil(support) * 2 + 1, i, x;
    double *pre = malloc((size_t)ksize * sizeof(double));
    c->ksize = ksize;
    c->bounds = malloc((size_t)n * 2 * sizeof(int));
    c->kk = calloc((size_t)n * ksize, sizeof(int));
    if (!pre || !c->bounds || !c->kk) {
        free(pre);
        return 0;
    }
    for (i = 0; i < n; i++) {
        double center = 0.0 + (o0 + i + 0.5) * scale, ww = 0.0;
        int xmin = (int)(center - support + 0.5), xmax;
        if (xmin < 0) xmin = 0;
        xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (x = 0; x < xmax; x++) {
            double w = bilinear((x + xmin - center + 0.5) * ss);
            pre[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++) {
            if (ww != 0.0) pre[x] /= ww;
            c->kk[i * ksize + x] = pre[x] < 0 ? (int)(-0.5 + pre[x] * (1 << PRECISION_BITS))
                                              : (int)(0.5 + pre[x] * (1 << PRECISION_BITS));
        }
        c->bounds[i * 2] = xmin;
        c->bounds[i * 2 + 1] = xmax;
    }
    free(pre);
    return 1;
}

static void free_coeffs(Coeffs *c) {
    free(c->bounds);
    free(c->kk);
    free(c->plan);
}

static inline unsigned char clip8(int v) {
    v >>= PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : (unsigned char)v;
}

/* The window the caller wants, and how it maps onto the image: the image (W x H) resized to
 * RW x RH, the cw x ch window at (x0, y0) of that, mirrored if flip. "The image" is the W x H box
 * at (ox, oy) of a FW x FH file: the whole file for resize-then-crop (torchvision's Resize, then
 * a crop), a crop box for crop-then-resize (RandomResizedCrop: PIL reads nothing outside it). */
typedef struct {
    int W, H, RW, RH, x0, y0, cw, ch, flip;
    int ox, oy, FW, FH;
} Window;

/* The coefficients of one direction (NULL kk when PIL skips that pass: the size is unchanged) for
 * the n outputs from o0 on, and the inputs [*lo, *hi) they read. */
static int direction(int in_size, int out_size, int o0, int n, Coeffs *c, int *lo, int *hi) {
    int i;
    memset(c, 0, sizeof(*c));
    if (out_size == in_size) {
        *lo = o0;
        *hi = o0 + n;
        return 1;
    }
    if (!coeffs(in_size, out_size, o0, n, c)) return 0;
    *lo = in_size;
    *hi = 0;
    for (i = 0; i < n; i++) {
        if (c->bounds[2 * i] < *lo) *lo = c->bounds[2 * i];
        if (c->bounds[2 * i] + c->bounds[2 * i + 1] > *hi) *hi = c->bounds[2 * i] + c->bounds[2 * i + 1];
    }
    return 1;
}

/* Both directions: the input columns [*c0, *c1) and rows [*r0, *r1) the window reads. */
static int window_coeffs(const Window *win, Coeffs *hc, Coeffs *vc, int *c0, int *c1, int *r0, int *r1) {
    memset(vc, 0, sizeof(*vc));
    return direction(win->W, win->RW, win->x0, win->cw, hc, c0, c1) &&
           direction(win->H, win->RH, win->y0, win->ch, vc, r0, r1);
}

/* The two passes' inner loops. Integer arithmetic only (int32 products and sums, PIL's), so the
 * SIMD versions give the scalar version's result, bit for bit; on x86-64 they are chosen at run
 * time (SSE4.1 and AVX2 exist on every x86-64 server CPU of the last decade).
 *
 * Between the passes the rows are kept as three channel planes (rows x cw each), already mirrored
 * if asked: the vertical pass then reads and writes contiguous rows of one channel, straight into
 * the CHW output. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define X86_SIMD 1
static int have_sse41 = 0, have_avx2 = 0;
#endif

/* The AVX2 plane loop's tables (build_hplan, below): one record per block of 8 stored outputs,
 * HREC(pairs) bytes: the 2 lanes' load offsets (columns from c0) in its first 32 bytes, then per
 * tap pair a 32-byte shuffle and the 16 low and 16 high weight halves. One allocation with the plan
 * and the row's planes (free). */
#define HREC(pairs) (32 + 96 * (size_t)(pairs))
typedef struct {
    int c0, cols;          /* the input columns [c0, c0 + cols) a row's planes hold */
    int blocks, pairs;     /* blocks of 8 outputs; tap pairs per output */
    size_t plane;          /* bytes per plane: cols + the loads' overhang */
    unsigned char *table;  /* blocks records */
    unsigned char *planes; /* 3 planes */
} HPlan;

/* vrow_avx2 (below) takes at most VROW_PAIRS tap pairs: scales up to about 7 */
#define VROW_PAIRS 8
#ifdef X86_SIMD
#define VROW_AVX2_OK(taps) (have_avx2 && (taps) <= 2 * VROW_PAIRS)
#else
#define VROW_AVX2_OK(taps) 0
#endif

/* Where the horizontal pass writes one row: its three planes' rows, and the column order. */
typedef struct {
    unsigned char *c0, *c1, *c2;
    int flip;
} PlaneRow;

static inline void put(const PlaneRow *o, int cw, int i, unsigned char r, unsigned char g, unsigned char b) {
    int at = o->flip ? cw - 1 - i : i;
    o->c0[at] = r;
    o->c1[at] = g;
    o->c2[at] = b;
}

/* one row of the horizontal pass: cw output pixels from a line of RGB pixels */
static void hpass_row_scalar(const unsigned char *line, const Coeffs *hc, int x_origin, int cw, const PlaneRow *o) {
    int i, k;
    for (i = 0; i < cw; i++) {
        const int *kw = hc->kk + (size_t)i * hc->ksize;
        const unsigned char *p = line + (size_t)(hc->bounds[2 * i] - x_origin) * 3;
        int n = hc->bounds[2 * i + 1];
        int s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (k = 0; k < n; k++) {
            s0 += p[3 * k] * kw[k];
            s1 += p[3 * k + 1] * kw[k];
            s2 += p[3 * k + 2] * kw[k];
        }
        put(o, cw, i, clip8(s0), clip8(s1), clip8(s2));
    }
}

#ifdef X86_SIMD
/* the same with the three channels of a pixel in one vector */
__attribute__((target("sse4.1"))) static void hpass_row_sse41(const unsigned char *line, const Coeffs *hc,
                                                               int x_origin, int cw, const PlaneRow *o) {
    int i, k;
    for (i = 0; i < cw; i++) {
        const int *kw = hc->kk + (size_t)i * hc->ksize;
        const unsigned char *p = line + (size_t)(hc->bounds[2 * i] - x_origin) * 3;
        int n = hc->bounds[2 * i + 1], v;
        __m128i acc = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
        for (k = 0; k < n; k++) {
            /* assembled in a register: never reads past the pixel (an unpadded buffer), and no
             * partial store to reload (a 3-byte memcpy into an int stalls store forwarding) */
            v = p[3 * k] | (p[3 * k + 1] << 8) | (p[3 * k + 2] << 16);
            acc = _mm_add_epi32(acc, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(v)), _mm_set1_epi32(kw[k])));
        }
        /* clip8: >> PRECISION_BITS, then saturate to 0..255 */
        acc = _mm_srai_epi32(acc, PRECISION_BITS);
        v = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(acc, acc), acc));
        put(o, cw, i, (unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16));
    }
}

/* The faster AVX2 passes (issue 15: AlexNet's window had to cost less than a full decode).
 *
 * madd_epi16 sums the products of two int16 pairs into one int32. PIL's weights have 22 bits, so
 * each is split w = hi * 2^15 + lo (0 <= lo < 2^15, |hi| <= 2^7, both int16) and the sum is rebuilt
 * as (sum p * hi) * 2^15 + sum p * lo. That is integer arithmetic, so it is PIL's int32 sum exactly
 * (no term overflows: a sum is at most 255 times the weights' total, about 255 * 2^22). */
#define SPLIT_BITS 15
#define W_LO(w) ((w) & ((1 << SPLIT_BITS) - 1))
#define W_HI(w) ((w) >> SPLIT_BITS)

/* The horizontal pass in channel planes. Each row's needed columns are first taken apart into
 * three planes; then 8 outputs of a plane at once, 4 per 128-bit lane: a lane's 4 outputs read
 * their taps from one 16-byte load, a byte shuffle per tap pair puts the pair's two pixels of each
 * output side by side as int16, and madd_epi16 weighs them. Mirroring is in the tables: the
 * outputs are taken in the order they are stored. build_hplan returns NULL when a lane's 4
 * outputs span more than 16 input columns (scales above about 3.3): the per-pixel loops above
 * (SSE4.1 or scalar) run instead. The tables: HPlan, above. */

static unsigned char deint_mask[3][3][16]; /* [channel][source 16 bytes][out byte]: set at import */

static void init_deint_masks(void) {
    int c, s, p;
    for (c = 0; c < 3; c++)
        for (s = 0; s < 3; s++)
            for (p = 0; p < 16; p++) {
                int at = 3 * p + c - 16 * s;
                deint_mask[c][s][p] = (unsigned char)(at >= 0 && at < 16 ? at : 0x80);
            }
}

static HPlan *build_hplan(const Coeffs *hc, int cw, int flip, int c0, int c1) {
    int blocks = (cw + 7) / 8, taps = 0, pairs, b, l, q, m, t;
    size_t plane = (size_t)(c1 - c0) + 32; /* a load reads 16 bytes from a base below cols */
    HPlan *p;
    for (b = 0; b < cw; b++)
        if (hc->bounds[2 * b + 1] > taps) taps = hc->bounds[2 * b + 1];
    pairs = (taps + 1) / 2;
    p = calloc(1, sizeof(HPlan) + (size_t)blocks * HREC(pairs) + 3 * plane);
    if (!p) return NULL;
    p->table = (unsigned char *)(p + 1);
    p->planes = p->table + (size_t)blocks * HREC(pairs);
    p->c0 = c0;
    p->cols = c1 - c0;
    p->blocks = blocks;
    p->pairs = pairs;
    p->plane = plane;
    for (b = 0; b < blocks; b++) {
        unsigned char *rec = p->table + (size_t)b * HREC(pairs);
        for (l = 0; l < 2; l++) {
            /* the lane's outputs: stored positions j = 8b + 4l + q; past cw, a lane repeats the
             * last output (computed, never stored) */
            int first = 8 * b + 4 * l, base = -1;
            for (q = 0; q < 4; q++) {
                int j = first + q < cw ? first + q : cw - 1, i = flip ? cw - 1 - j : j;
                if (base < 0 || hc->bounds[2 * i] - c0 < base) base = hc->bounds[2 * i] - c0;
            }
            ((int *)rec)[l] = base;
            for (q = 0; q < 4; q++) {
                int j = first + q < cw ? first + q : cw - 1, i = flip ? cw - 1 - j : j;
                int from = hc->bounds[2 * i] - c0 - base, n = hc->bounds[2 * i + 1];
                for (m = 0; m < pairs; m++)
                    for (t = 0; t < 2; t++) {
                        int k = 2 * m + t;
                        unsigned char *mask = rec + 32 + 96 * m + 16 * l + 4 * q + 2 * t;
                        short *w = (short *)(rec + 64 + 96 * m) + 8 * l + 2 * q + t;
                        mask[0] = 0x80; /* a tap past the output's last: zero, weight 0 */
                        mask[1] = 0x80; /* the int16's high byte: zero */
                        if (k < n) {
                            int kw = hc->kk[(size_t)i * hc->ksize + k];
                            if (from + k > 15) { /* this lane's taps do not fit one load */
                                free(p);
                                return NULL;
                            }
                            mask[0] = (unsigned char)(from + k);
                            w[0] = (short)W_LO(kw);
                            w[16] = (short)W_HI(kw);
                        }
                    }
            }
        }
    }
    return p;
}

/* block rec's 8 outputs of one plane, as int32 after PIL's rounding shift (not yet clipped);
 * PAIRS > 0 unrolls the pairs' loop, 0 takes the plan's count */
#define HBLOCK(NAME, PAIRS)                                                                                        \
    __attribute__((target("avx2"))) static inline __m256i NAME(const unsigned char *src, const unsigned char *rec, \
                                                               int pairs) {                                       \
        __m256i px = _mm256_inserti128_si256(                                                                      \
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(src + ((const int *)rec)[0]))),               \
            _mm_loadu_si128((const __m128i *)(src + ((const int *)rec)[1])), 1);                                   \
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256(), s;                                      \
        int m, n = PAIRS ? PAIRS : pairs;                                                                          \
        for (m = 0; m < n; m++) {                                                                                  \
            const unsigned char *pr = rec + 32 + 96 * m;                                                           \
            __m256i v = _mm256_shuffle_epi8(px, _mm256_loadu_si256((const __m256i *)pr));                         \
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(v, _mm256_loadu_si256((const __m256i *)(pr + 32))));      \
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(v, _mm256_loadu_si256((const __m256i *)(pr + 64))));      \
        }                                                                                                          \
        s = _mm256_add_epi32(_mm256_slli_epi32(hi, SPLIT_BITS), lo);                                               \
        return _mm256_srai_epi32(_mm256_add_epi32(s, _mm256_set1_epi32(1 << (PRECISION_BITS - 1))),               \
                                 PRECISION_BITS);                                                                  \
    }
HBLOCK(hblock2, 2) /* scales up to 2: at most 4 taps */
HBLOCK(hblock_n, 0)

/* one plane's cw outputs; two blocks (16 outputs) per store, a last odd block alone */
#define HPLANE(NAME, HB)                                                                                           \
    __attribute__((target("avx2"))) static void NAME(const unsigned char *src, const HPlan *p, int cw,             \
                                                     unsigned char *dst) {                                        \
        size_t rec = HREC(p->pairs);                                                                               \
        const unsigned char *r = p->table;                                                                         \
        int b;                                                                                                     \
        unsigned char last[16];                                                                                    \
        __m256i s;                                                                                                 \
        for (b = 0; b + 1 < p->blocks; b += 2, r += 2 * rec) {                                                     \
            s = _mm256_packs_epi32(HB(src, r, p->pairs), HB(src, r + rec, p->pairs));                              \
            s = _mm256_packus_epi16(s, s); /* lane 0: outputs 0-3, 8-11; lane 1: 4-7, 12-15 */                    \
            s = _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5));                         \
            if (8 * b + 16 <= cw) {                                                                                \
                _mm_storeu_si128((__m128i *)(dst + 8 * b), _mm256_castsi256_si128(s));                             \
                continue;                                                                                          \
            }                                                                                                      \
            _mm_storeu_si128((__m128i *)last, _mm256_castsi256_si128(s));                                          \
            memcpy(dst + 8 * b, last, (size_t)(cw - 8 * b));                                                       \
        }                                                                                                          \
        if (b < p->blocks) {                                                                                       \
            s = HB(src, r, p->pairs);                                                                              \
            s = _mm256_packus_epi16(_mm256_packs_epi32(s, s), s); /* per lane: its 4 outputs */                    \
            s = _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));                         \
            _mm_storeu_si128((__m128i *)last, _mm256_castsi256_si128(s));                                          \
            memcpy(dst + 8 * b, last, (size_t)(cw - 8 * b));                                                       \
        }                                                                                                          \
    }
HPLANE(hplane2, hblock2)
HPLANE(hplane_n, hblock_n)

/* one row: line holds the pixels of columns [c0, c0 + cols) (RGB) */
__attribute__((target("avx2"))) static void hpass_row_planes(const unsigned char *line, const HPlan *p, int cw,
                                                              const PlaneRow *o) {
    unsigned char *pl[3] = {p->planes, p->planes + p->plane, p->planes + 2 * p->plane};
    unsigned char *dst[3] = {o->c0, o->c1, o->c2};
    int x = 0, c;
    /* take the channels apart, 16 pixels (48 bytes) at a time; no read past the row's columns */
    for (; x + 16 <= p->cols; x += 16) {
        __m128i s0 = _mm_loadu_si128((const __m128i *)(line + 3 * x));
        __m128i s1 = _mm_loadu_si128((const __m128i *)(line + 3 * x + 16));
        __m128i s2 = _mm_loadu_si128((const __m128i *)(line + 3 * x + 32));
        for (c = 0; c < 3; c++) {
            __m128i v = _mm_or_si128(_mm_shuffle_epi8(s0, _mm_loadu_si128((const __m128i *)deint_mask[c][0])),
                                     _mm_shuffle_epi8(s1, _mm_loadu_si128((const __m128i *)deint_mask[c][1])));
            v = _mm_or_si128(v, _mm_shuffle_epi8(s2, _mm_loadu_si128((const __m128i *)deint_mask[c][2])));
            _mm_storeu_si128((__m128i *)(pl[c] + x), v);
        }
    }
    for (; x < p->cols; x++) {
        pl[0][x] = line[3 * x];
        pl[1][x] = line[3 * x + 1];
        pl[2][x] = line[3 * x + 2];
    }
    for (c = 0; c < 3; c++) {
        if (p->pairs == 2)
            hplane2(pl[c], p, cw, dst[c]);
        else
            hplane_n(pl[c], p, cw, dst[c]);
    }
}

/* One output row of the vertical pass: out[t] = clip8(sum_k rows[k][t] * kk[k]) for t < n, the
 * taps' rows stride bytes apart. 16 values at a time, two taps per madd_epi16 (an odd last tap
 * pairs with weight 0); at most VROW_PAIRS pairs (VROW_AVX2_OK; vrow's other loop above). */
__attribute__((target("avx2"))) static void vrow_avx2(unsigned char *out, const unsigned char *rows, size_t stride,
                                                       int n, const int *kk, int taps) {
    __m256i wl[VROW_PAIRS], wh[VROW_PAIRS];
    int t = 0, k, pairs = (taps + 1) / 2;
    for (k = 0; k < taps; k += 2) {
        int w0 = kk[k], w1 = k + 1 < taps ? kk[k + 1] : 0;
        wl[k / 2] = _mm256_set1_epi32((int)((unsigned)W_LO(w0) | ((unsigned)W_LO(w1) << 16)));
        wh[k / 2] = _mm256_set1_epi32((int)(((unsigned)W_HI(w0) & 0xFFFF) | ((unsigned)W_HI(w1) << 16)));
    }
    for (; t + 16 <= n; t += 16) {
        __m256i lo0 = _mm256_setzero_si256(), lo1 = lo0, hi0 = lo0, hi1 = lo0, a, b, s0, s1;
        const unsigned char *q = rows + t;
        for (k = 0; k < pairs; k++, q += 2 * stride) {
            a = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)q));
            b = 2 * k + 1 < taps ? _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(q + stride))) : a;
            s0 = _mm256_unpacklo_epi16(a, b); /* per lane: (row 2k, row 2k+1) of values 0-3, 8-11 */
            s1 = _mm256_unpackhi_epi16(a, b); /* 4-7, 12-15 */
            lo0 = _mm256_add_epi32(lo0, _mm256_madd_epi16(s0, wl[k]));
            lo1 = _mm256_add_epi32(lo1, _mm256_madd_epi16(s1, wl[k]));
            hi0 = _mm256_add_epi32(hi0, _mm256_madd_epi16(s0, wh[k]));
            hi1 = _mm256_add_epi32(hi1, _mm256_madd_epi16(s1, wh[k]));
        }
        s0 = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi0, SPLIT_BITS), lo0),
                              _mm256_set1_epi32(1 << (PRECISION_BITS - 1)));
        s1 = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi1, SPLIT_BITS), lo1),
                              _mm256_set1_epi32(1 << (PRECISION_BITS - 1)));
        s0 = _mm256_packs_epi32(_mm256_srai_epi32(s0, PRECISION_BITS), _mm256_srai_epi32(s1, PRECISION_BITS));
        s0 = _mm256_packus_epi16(s0, s0); /* lane 0: values 0-7, lane 1: 8-15 (each twice) */
        s0 = _mm256_permute4x64_epi64(s0, 0x08);
        _mm_storeu_si128((__m128i *)(out + t), _mm256_castsi256_si128(s0));
    }
    for (; t < n; t++) {
        int acc = 1 << (PRECISION_BITS - 1);
        for (k = 0; k < taps; k++) acc += rows[(size_t)k * stride + t] * kk[k];
        out[t] = clip8(acc);
    }
}
#endif

/* acc[t] += row[t] * w over n values: the vertical pass, vectorised along the row */
#ifdef X86_SIMD
__attribute__((target_clones("avx2", "default")))
#endif
static void vaccumulate(int *restrict acc, const unsigned char *restrict row, int n, int w) {
    int t;
    for (t = 0; t < n; t++) acc[t] += row[t] * w;
}

/* out[t] = clip8(acc[t]) over n values */
#ifdef X86_SIMD
__attribute__((target_clones("avx2", "default")))
#endif
static void vclip(unsigned char *restrict out, const int *restrict acc, int n) {
    int t;
    for (t = 0; t < n; t++) {
        int v = acc[t] >> PRECISION_BITS;
        out[t] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

/* one output row of the vertical pass (vrow_avx2's contract); acc: n ints of scratch */
static void vrow(unsigned char *out, const unsigned char *rows, size_t stride, int n, const int *kk, int taps,
                 int *acc) {
    int k;
#ifdef X86_SIMD
    if (VROW_AVX2_OK(taps)) {
        vrow_avx2(out, rows, stride, n, kk, taps);
        return;
    }
#endif
    for (k = 0; k < n; k++) acc[k] = 1 << (PRECISION_BITS - 1);
    for (k = 0; k < taps; k++) vaccumulate(acc, rows + (size_t)k * stride, n, kk[k]);
    vclip(out, acc, n);
}

/* tmp: three planes of (r1 - r0) rows x cw, the rows of the horizontal pass */
static PlaneRow plane_row(unsigned char *tmp, const Window *win, int rows, int r) {
    size_t plane = (size_t)rows * win->cw;
    PlaneRow o;
    o.c0 = tmp + (size_t)r * win->cw;
    o.c1 = o.c0 + plane;
    o.c2 = o.c1 + plane;
    o.flip = win->flip;
    return o;
}

/* The horizontal pass over the image rows [first, first + nrows) held in lines (stride bytes
 * apart, starting at column x_origin), for those of them in [r0, r1): into rows r - r0 of tmp
 * (PIL's order: horizontal first, each value rounded to uint8). */
static void hpass(const unsigned char *lines, size_t stride, int first, int nrows, int x_origin,
                  const Window *win, const Coeffs *hc, int r0, int r1, unsigned char *tmp) {
    int cw = win->cw, a = first > r0 ? first : r0, b = first + nrows < r1 ? first + nrows : r1, r = a, i;
#ifdef X86_SIMD
    if (hc->plan) { /* built only with AVX2 */
        const HPlan *p = hc->plan;
        for (; r < b; r++) {
            PlaneRow o = plane_row(tmp, win, r1 - r0, r - r0);
            hpass_row_planes(lines + (size_t)(r - first) * stride + (size_t)(p->c0 - x_origin) * 3, p, cw, &o);
        }
        return;
    }
#endif
    for (; r < b; r++) {
        const unsigned char *line = lines + (size_t)(r - first) * stride;
        PlaneRow o = plane_row(tmp, win, r1 - r0, r - r0);
        if (!hc->kk) { /* the size is unchanged: PIL skips this pass */
            const unsigned char *p = line + (size_t)(win->x0 - x_origin) * 3;
            for (i = 0; i < cw; i++) put(&o, cw, i, p[3 * i], p[3 * i + 1], p[3 * i + 2]);
        }
#ifdef X86_SIMD
        else if (have_sse41)
            hpass_row_sse41(line, hc, x_origin, cw, &o);
#endif
        else
            hpass_row_scalar(line, hc, x_origin, cw, &o);
    }
}

/* The vertical pass from tmp (rows r0.. of the horizontal pass, in planes) into out (3 x ch x cw,
 * channel-major), one row of one channel at a time. */
static int vpass(const Window *win, const Coeffs *vc, int r0, int r1, const unsigned char *tmp, unsigned char *out,
                 char *err) {
    int cw = win->cw, ch = win->ch, c, j;
    size_t rows = (size_t)(r1 - r0);
    int *acc = malloc((size_t)cw * sizeof(int));
    if (!acc) {
        snprintf(err, ERRLEN, "out of memory resampling a %dx%d window", cw, ch);
        return 0;
    }
    for (c = 0; c < 3; c++) {
        const unsigned char *src = tmp + c * rows * cw;
        for (j = 0; j < ch; j++) {
            unsigned char *o = out + ((size_t)c * ch + j) * cw;
            if (!vc->kk) { /* the size is unchanged: PIL skips this pass */
                memcpy(o, src + (size_t)(win->y0 + j - r0) * cw, (size_t)cw);
                continue;
            }
            vrow(o, src + (size_t)(vc->bounds[2 * j] - r0) * cw, (size_t)cw, cw, vc->kk + (size_t)j * vc->ksize,
                 vc->bounds[2 * j + 1], acc);
        }
    }
    free(acc);
    return 1;
}

/* the sink that runs the horizontal pass on rows as they are decoded */
typedef struct {
    RowSink base;
    const Window *win;
    const Coeffs *hc;
    int r0, r1, c0, c1;
    unsigned char *tmp;
    int uncovered; /* set if the decoded columns miss some of [c0, c1): never, by libjpeg's contract */
} HpassSink;

static void hpass_take(RowSink *self, const unsigned char *rows, int first, int n, int x, int width) {
    HpassSink *s = (HpassSink *)self;
    const Window *w = s->win;
    if (x - w->ox > s->c0 || x - w->ox + width < s->c1) {
        s->uncovered = 1;
        return;
    }
    hpass(rows, (size_t)width * 3, first - w->oy, n, x - w->ox, w, s->hc, s->r0, s->r1, s->tmp);
}

static int check_window(const Window *w) {
    if (w->ox < 0 || w->oy < 0 || w->ox + w->W > w->FW || w->oy + w->H > w->FH) {
        PyErr_Format(PyExc_ValueError, "box %dx%d at (%d, %d) is not inside the %dx%d image", w->W, w->H, w->ox, w->oy,
                     w->FW, w->FH);
        return 0;
    }
    if (w->W <= 0 || w->H <= 0 || w->RW <= 0 || w->RH <= 0 || w->cw <= 0 || w->ch <= 0 || w->x0 < 0 || w->y0 < 0 ||
        w->x0 + w->cw > w->RW || w->y0 + w->ch > w->RH) {
        PyErr_Format(PyExc_ValueError, "window %dx%d at (%d, %d) is not inside the %dx%d resized image", w->cw, w->ch,
                     w->x0, w->y0, w->RW, w->RH);
        return 0;
    }
    return 1;
}

static PyObject *py_decode_region(PyObject *self, PyObject *args) {
    Py_buffer data;
    int x, y, w, h, ok;
    Region r;
    char err[ERRLEN];
    PyObject *pixels, *result;
    if (!PyArg_ParseTuple(args, "y*iiii", &data, &x, &y, &w, &h)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    ok = decode_region(data.buf, (size_t)data.len, x, y, w, h, &r, err, NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    pixels = PyByteArray_FromStringAndSize((const char *)r.pixels, (Py_ssize_t)r.w * r.h * 3);
    free(r.pixels);
    if (!pixels) return NULL;
    result = Py_BuildValue("(Niiii)", pixels, r.x, r.y, r.w, r.h);
    return result;
}

/* Pillow's choice of pass order (Resample.c, ImagingResampleInner, Pillow 13): vertical first when
 * the height shrinks by more than twice as many pixels as the width. The order changes the rounding
 * between the passes (one level, in some pixels), so PIL's pixels need PIL's order. Only matters
 * when both passes run: isotropic resizes of images at most twice as tall as wide, and
 * enlargements, go horizontal first; crop boxes (RandomResizedCrop) often do not. */
static int horizontal_first(const Window *w) {
    return !((w->H - w->RH) > 0 && (w->H - w->RH) > (w->W - w->RW) * 2);
}

/* Vertical first, then horizontal, from decoded rows (src covers rows [r0, r1) and columns
 * [c0, c1) of the image): the vertical pass for the window's rows over the columns the
 * horizontal taps read, rounded to uint8, then the horizontal pass straight into out. */
static int vertical_first(const Region *src, const Window *win, const Coeffs *hc, const Coeffs *vc, int c0, int c1,
                          unsigned char *out, char *err) {
    int ch = win->ch, n = (c1 - c0) * 3, j;
    size_t stride = (size_t)src->w * 3;
    unsigned char *tmp = malloc((size_t)ch * n);
    int *acc = malloc((size_t)n * sizeof(int));
    if (!tmp || !acc) {
        free(tmp);
        free(acc);
        snprintf(err, ERRLEN, "out of memory resampling a %dx%d window", win->cw, ch);
        return 0;
    }
    for (j = 0; j < ch; j++) {
        /* image row y of the box is row y + oy - src->y of src; column c0 is at c0 + ox - src->x */
        const unsigned char *q = src->pixels + (size_t)(vc->bounds[2 * j] + win->oy - src->y) * stride +
                                 (size_t)(c0 + win->ox - src->x) * 3;
        vrow(tmp + (size_t)j * n, q, stride, n, vc->kk + (size_t)j * vc->ksize, vc->bounds[2 * j + 1], acc);
    }
    hpass(tmp, (size_t)n, 0, ch, c0, win, hc, 0, ch, out);
    free(acc);
    free(tmp);
    return 1;
}

/* the horizontal pass's tables for the AVX2 plane loop, where it applies (else plan stays NULL and
 * the row loops run) */
static void attach_hplan(Coeffs *hc, const Window *win, int c0, int c1) {
#ifdef X86_SIMD
    if (hc->kk && have_avx2) hc->plan = build_hplan(hc, win->cw, win->flip, c0, c1);
#else
    (void)hc, (void)win, (void)c0, (void)c1;
#endif
}

/* both window functions: the coefficients; then the rows they read, decoded (jpeg given: only the
 * region, its rows handed to the horizontal pass as they come) or already decoded; then the
 * vertical pass (or, in Pillow's other order, both passes on the decoded region) */
static PyObject *window(const Window *win, const unsigned char *jpeg, size_t jpeg_size, const Region *decoded) {
    Coeffs hc, vc;
    int c0 = 0, c1 = 0, r0 = 0, r1 = 0, ok = 0, hfirst;
    unsigned char *tmp = NULL;
    char err[ERRLEN];
    /* a bytearray: torch.frombuffer shares its memory, writable */
    PyObject *out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)3 * win->cw * win->ch);
    if (!out) return NULL;
    err[0] = 0;
    Py_BEGIN_ALLOW_THREADS
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out);
    if (!window_coeffs(win, &hc, &vc, &c0, &c1, &r0, &r1) ||
        !(tmp = malloc((size_t)(r1 - r0) * win->cw * 3))) {
        snprintf(err, ERRLEN, "out of memory for resampling a %dx%d window", win->cw, win->ch);
        goto done;
    }
    hfirst = !(hc.kk && vc.kk) || horizontal_first(win);
    attach_hplan(&hc, win, c0, c1);
    if (jpeg) {
        /* in the file's coordinates; the margin may reach outside a crop box (never read from) */
        int x = win->ox + c0 - MARGIN, y = win->oy + r0 - MARGIN, xe = win->ox + c1 + MARGIN, ye = win->oy + r1 + MARGIN;
        HpassSink sink = {{hpass_take}, win, &hc, r0, r1, c0, c1, tmp, 0};
        Region r;
        x = x < 0 ? 0 : x;
        y = y < 0 ? 0 : y;
        xe = xe > win->FW ? win->FW : xe;
        ye = ye > win->FH ? win->FH : ye;
        if (!decode_region(jpeg, jpeg_size, x, y, xe - x, ye - y, &r, err, hfirst ? &sink.base : NULL)) goto done;
        if (!hfirst) {
            /* crop_scanline only widens the columns asked for: r covers [c0, c1) */
            ok = vertical_first(&r, win, &hc, &vc, c0, c1, dst, err);
            free(r.pixels);
        } else if (sink.uncovered) {
            snprintf(err, ERRLEN, "libjpeg decoded columns that miss %d-%d", c0, c1);
        } else {
            ok = vpass(win, &vc, r0, r1, tmp, dst, err);
        }
    } else if (!hfirst) {
        ok = vertical_first(decoded, win, &hc, &vc, c0, c1, dst, err);
    } else {
        hpass(decoded->pixels + (size_t)(win->oy + r0 - decoded->y) * decoded->w * 3, (size_t)decoded->w * 3,
              r0, r1 - r0, decoded->x - win->ox, win, &hc, r0, r1, tmp);
        ok = vpass(win, &vc, r0, r1, tmp, dst, err);
    }
done:
    free(tmp);
    free_coeffs(&hc);
    free_coeffs(&vc);
    Py_END_ALLOW_THREADS
    if (!ok) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    return out;
}

/* the arguments both window functions share: (bytes, W, H, RW, RH, x0, y0, cw, ch, flip[, ox, oy, FW,
 * FH]); without the box, the image is the whole W x H file */
static int parse_window(PyObject *args, Py_buffer *buf, Window *w) {
    w->ox = w->oy = 0;
    w->FW = w->FH = -1;
    if (!PyArg_ParseTuple(args, "y*iiiiiiiip|iiii", buf, &w->W, &w->H, &w->RW, &w->RH, &w->x0, &w->y0, &w->cw,
                          &w->ch, &w->flip, &w->ox, &w->oy, &w->FW, &w->FH))
        return 0;
    if (w->FW < 0) w->FW = w->W;
    if (w->FH < 0) w->FH = w->H;
    return 1;
}

static PyObject *py_decode_resized_window(PyObject *self, PyObject *args) {
    Py_buffer data;
    Window w;
    PyObject *out;
    if (!parse_window(args, &data, &w)) return NULL;
    out = check_window(&w) ? window(&w, data.buf, (size_t)data.len, NULL) : NULL;
    PyBuffer_Release(&data);
    return out;
}

static PyObject *py_resized_window(PyObject *self, PyObject *args) {
    Py_buffer pixels;
    Window w;
    Region r;
    PyObject *out = NULL;
    if (!parse_window(args, &pixels, &w)) return NULL;
    if (pixels.len != (Py_ssize_t)w.FW * w.FH * 3) {
        PyErr_Format(PyExc_ValueError, "%zd bytes of pixels for a %dx%d RGB image (needs %zd)", pixels.len, w.FW, w.FH,
                     (Py_ssize_t)w.FW * w.FH * 3);
    } else if (check_window(&w)) {
        r.pixels = pixels.buf;
        r.x = r.y = 0;
        r.w = w.FW;
        r.h = w.FH;
        out = window(&w, NULL, 0, &r);
    }
    PyBuffer_Release(&pixels);
    return out;
}

/* _loops(W, H, RW, RH, x0, y0, cw, ch, flip) -> (horizontal, vertical): which loops a window runs,
 * for the tests that must reach every one: "copy" (size unchanged), "planes2"/"planes" (AVX2 plane
 * loop, 2 or more tap pairs), "rows" (the per-pixel row loops: SSE4.1 or scalar); vertical
 * "avx2" or "rows" (vaccumulate) */
static PyObject *py_loops(PyObject *self, PyObject *args) {
    Window w;
    Coeffs hc, vc;
    int c0, c1, r0, r1, taps = 0, j;
    const char *h, *v;
    (void)self;
    w.ox = w.oy = 0;
    if (!PyArg_ParseTuple(args, "iiiiiiiip", &w.W, &w.H, &w.RW, &w.RH, &w.x0, &w.y0, &w.cw, &w.ch, &w.flip))
        return NULL;
    w.FW = w.W;
    w.FH = w.H;
    if (!check_window(&w)) return NULL;
    if (!window_coeffs(&w, &hc, &vc, &c0, &c1, &r0, &r1)) {
        free_coeffs(&hc);
        free_coeffs(&vc);
        return PyErr_NoMemory();
    }
    attach_hplan(&hc, &w, c0, c1);
    h = !hc.kk ? "copy" : !hc.plan ? "rows" : ((HPlan *)hc.plan)->pairs == 2 ? "planes2" : "planes";
    for (j = 0; vc.kk && j < w.ch; j++)
        if (vc.bounds[2 * j + 1] > taps) taps = vc.bounds[2 * j + 1];
    v = !vc.kk ? "copy" : (VROW_AVX2_OK(taps) ? "avx2" : "rows");
    free_coeffs(&hc);
    free_coeffs(&vc);
    return Py_BuildValue("(ss)", h, v);
}

static PyMethodDef methods[] = {
    {"decode_region", py_decode_region, METH_VARARGS,
     "decode_region(jpeg, x, y, w, h) -> (rgb bytearray, rx, ry, rw, rh): rows y..y+h and at least columns x..x+w,\n"
     "widened by libjpeg-turbo to whole iMCU columns; (rx, ry) is the region's origin. ValueError if libjpeg\n"
     "fails or warns, or for a CMYK file."},
    {"decode_resized_window", py_decode_resized_window, METH_VARARGS,
     "decode_resized_window(jpeg, W, H, RW, RH, x0, y0, cw, ch, flip[, ox, oy, FW, FH]) -> bytearray (3 x ch x cw\n"
     "uint8): the window of the image resized to RW x RH by PIL's bilinear filter, decoding only the region it\n"
     "reads. With (ox, oy, FW, FH) the image is the W x H box at (ox, oy) of the FW x FH file, nothing outside\n"
     "it read (PIL's crop, then resize)."},
    {"resized_window", py_resized_window, METH_VARARGS,
     "resized_window(rgb, W, H, RW, RH, x0, y0, cw, ch, flip[, ox, oy, FW, FH]) -> bytearray: the same from the\n"
     "decoded file (FH x FW x 3 pixels)."},
    {"_loops", py_loops, METH_VARARGS, "_loops(W, H, RW, RH, x0, y0, cw, ch, flip) -> (horizontal, vertical) loop names (tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jpeg(void) {
    PyObject *m = PyModule_Create(&module);
#ifdef X86_SIMD
    __builtin_cpu_init();
    init_deint_masks();
    /* CNNREPRO_JPEG_NO_SIMD=1: the scalar loops only (tests/data/test_region_decode.py compares) */
    {
        const char *off = getenv("CNNREPRO_JPEG_NO_SIMD");
        int simd = !(off && *off && strcmp(off, "0") != 0);
        have_sse41 = simd && __builtin_cpu_supports("sse4.1");
        have_avx2 = simd && __builtin_cpu_supports("avx2");
    }
    if (m && (PyModule_AddIntConstant(m, "SSE41", have_sse41) < 0 ||
              PyModule_AddIntConstant(m, "AVX2", have_avx2) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    if (m && PyModule_AddIntConstant(m, "JPEG_LIB_VERSION", JPEG_LIB_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (m && PyModule_AddIntConstant(m, "MARGIN", MARGIN) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

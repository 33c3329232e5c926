/* crawlpairs.udfs.extract._hotloop: extract's per-record and per-link work in C.
 *
 * Every part does exactly what the Python code it stands for does (tests/extract/test_udfs_engines.py
 * compares them), for the inputs it can prove it handles the same way; anything else goes back
 * to that Python code. In the order a WAT file meets them:
 *
 *  - `members`: warcread's fast path over many gzip members (ISA-L's inflate through the
 *    caller's `isal` decompressor objects), WAT records without IMG@ only counted.
 *  - `flags`: the page scan (IMG@, "Base", creativecommons.org) in one SIMD pass.
 *  - `wat_links`: what candidates.py `_Builder.add_page` does over the images `wat.scan_page`
 *    cuts out:
 *    - link objects: each `"IMG@/src"` is cut out between the nearest `{` before and `}` after
 *      it, as scan_page does, and parsed by a small JSON object parser that accepts only flat
 *      objects of string values (what Common Crawl writes). Anything else (a number, an escaped
 *      key, a brace inside a string, invalid UTF-8, a lone surrogate) returns None before any
 *      row is written, and the caller takes the Python path for the whole page.
 *    - URLs: ASCII hrefs that are absolute http(s) or plain relative (`/a/b.jpg`, `b.jpg`) and
 *      whose result is already in the WHATWG normal form (the same test as urls._CLEAN) are
 *      judged here; every other href goes to the Python `judge` callable (urls.resolve,
 *      urls.normalize_url through ada, the filters): the same code the Python path runs.
 *    - texts: an alt of printable ASCII without `&` is cleaned here (its only possible change is
 *      collapsing spaces); every other candidate list goes to the Python `pick` callable.
 *    - dedup within the page and uid: sha256(url "\t" text) in C (SHA-NI where the CPU has it).
 *    - the kept rows go into a `Columns` object: Arrow's string layout, no Python object per row.
 *  - `lid_model` / `lid_column` / `lid`: language ID, fastText's inference for lid.176.ftz.
 *  - `UidSet`: the job's per-file dedup.
 *
 * State lives only in the Columns / UidSet objects and the model capsules their owners hold;
 * the GIL is held throughout.
 */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_SHANI_CODE 1
#include <cpuid.h>
#include <immintrin.h>
#endif

/* ---------------------------------------------------------------- SHA-256 (FIPS 180-4) */

typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t n;
} sha256_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_ctx *c, const uint8_t *p) {
    uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3];
    e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
    for (int i = 0; i < 64; i++) {
        t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d;
    c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}

#ifdef HAVE_SHANI_CODE
/* The same compression function with the x86 SHA extensions (SHA-NI: every AMD Zen, Intel since
 * Ice Lake / Goldmont): ~5x faster than the portable code. Chosen at import by CPUID; the
 * digest test runs both. State as SHA-NI wants it: (A,B,E,F) and (C,D,G,H) in two registers. */
__attribute__((target("sha,sse4.1,ssse3")))
static void sha256_block_ni(sha256_ctx *c, const uint8_t *p) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&c->h[0]), 0xB1); /* C D A B */
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&c->h[4]), 0x1B); /* E F G H */
    __m128i s0 = _mm_alignr_epi8(t, s1, 8);   /* A B E F */
    s1 = _mm_blend_epi16(s1, t, 0xF0);        /* C D G H */
    const __m128i abef = s0, cdgh = s1;
    __m128i x[4];
    for (int i = 0; i < 16; i++) {
        __m128i w;
        if (i < 4) {
            w = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
        } else { /* W[t] from W[t-16..t-1]: msg1 adds sigma0, the alignr adds W[t-7], msg2 sigma1 */
            w = _mm_sha256msg1_epu32(x[i & 3], x[(i + 1) & 3]);
            w = _mm_add_epi32(w, _mm_alignr_epi8(x[(i + 3) & 3], x[(i + 2) & 3], 4));
            w = _mm_sha256msg2_epu32(w, x[(i + 3) & 3]);
        }
        x[i & 3] = w;
        __m128i m = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&K256[4 * i]));
        s1 = _mm_sha256rnds2_epu32(s1, s0, m);
        s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
    }
    s0 = _mm_add_epi32(s0, abef);
    s1 = _mm_add_epi32(s1, cdgh);
    t = _mm_shuffle_epi32(s0, 0x1B);          /* F E B A */
    s1 = _mm_shuffle_epi32(s1, 0xB1);         /* D C H G */
    _mm_storeu_si128((__m128i *)&c->h[0], _mm_blend_epi16(t, s1, 0xF0)); /* D C B A */
    _mm_storeu_si128((__m128i *)&c->h[4], _mm_alignr_epi8(s1, t, 8));    /* H G F E */
}

static int cpu_has_shani(void) {
    unsigned a, b, cx, d;
    if (!__get_cpuid(1, &a, &b, &cx, &d) || !(cx & (1u << 19)) || !(cx & (1u << 9))) return 0; /* SSE4.1, SSSE3 */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, cx, d);
    return (b >> 29) & 1; /* SHA */
}
#endif

/* the compression function in use: sha256_block, or sha256_block_ni where the CPU has it */
static void (*sha256_compress)(sha256_ctx *, const uint8_t *) = sha256_block;

static void sha256_init(sha256_ctx *c) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof iv);
    c->len = 0;
    c->n = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t n) {
    c->len += n;
    if (c->n) {
        size_t k = 64 - c->n < n ? 64 - c->n : n;
        memcpy(c->buf + c->n, p, k);
        c->n += k; p += k; n -= k;
        if (c->n < 64) return;
        sha256_compress(c, c->buf);
        c->n = 0;
    }
    while (n >= 64) { sha256_compress(c, p); p += 64; n -= 64; }
    if (n) { memcpy(c->buf, p, n); c->n = n; }
}

static void sha256_final(sha256_ctx *c, uint8_t out[32]) {
    uint64_t bits = c->len * 8;
    c->buf[c->n++] = 0x80;
    if (c->n > 56) { /* no room for the length: pad this block, then a block of zeros */
        memset(c->buf + c->n, 0, 64 - c->n);
        sha256_compress(c, c->buf);
        c->n = 0;
    }
    memset(c->buf + c->n, 0, 56 - c->n);
    for (int i = 0; i < 8; i++) c->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_compress(c, c->buf);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24); out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8); out[4 * i + 3] = (uint8_t)c->h[i];
    }
}

/* ---------------------------------------------------------------- small buffers */

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} buf_t;

static int buf_reserve(buf_t *b, Py_ssize_t extra) {
    if (b->n + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + extra) cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (!p) { PyErr_NoMemory(); return -1; }
    b->p = p;
    b->cap = cap;
    return 0;
}

/* ---------------------------------------------------------------- JSON strings */

/* A decoded string: offset/length in the arena; ascii: every byte < 0x80. */
typedef struct {
    Py_ssize_t off, len;
    int present, ascii;
} jstr;

enum { OK = 0, UNSUPPORTED = 1, FAIL = -1 };

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex4(const char *p, const char *end, unsigned *out) {
    if (end - p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return 0;
}

static void put_utf8(buf_t *b, unsigned cp) {
    char *o = b->p + b->n;
    if (cp < 0x80) { o[0] = (char)cp; b->n += 1; }
    else if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); b->n += 2; }
    else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        b->n += 3;
    } else {
        o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        o[2] = (char)(0x80 | (cp >> 6 & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); b->n += 4;
    }
}

/* Parse the JSON string starting at *pp (a '"') into the arena. UNSUPPORTED for anything a
 * strict parser would refuse (control characters, bad escapes, lone surrogates, invalid
 * UTF-8) or that runs past `end`. */
static int parse_string(const char **pp, const char *end, buf_t *arena, jstr *out) {
    const char *p = *pp + 1;
    if (buf_reserve(arena, end - p + 4) < 0) return FAIL;  /* decoded is never longer */
    out->off = arena->n;
    out->present = 1;
    int ascii = 1;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            out->len = arena->n - out->off;
            out->ascii = ascii;
            if (!ascii) {  /* strict UTF-8, as orjson requires */
                PyObject *u = PyUnicode_DecodeUTF8(arena->p + out->off, out->len, NULL);
                if (!u) { PyErr_Clear(); return UNSUPPORTED; }
                Py_DECREF(u);
            }
            *pp = p + 1;
            return OK;
        }
        if (c < 0x20) return UNSUPPORTED;
        if (c == '\\') {
            if (p + 1 >= end) return UNSUPPORTED;
            char e = p[1];
            char lit;
            switch (e) {
            case '"': lit = '"'; break;
            case '\\': lit = '\\'; break;
            case '/': lit = '/'; break;
            case 'b': lit = '\b'; break;
            case 'f': lit = '\f'; break;
            case 'n': lit = '\n'; break;
            case 'r': lit = '\r'; break;
            case 't': lit = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (hex4(p + 2, end, &cp) < 0) return UNSUPPORTED;
                p += 6;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return UNSUPPORTED;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) < 0) return UNSUPPORTED;
                    if (lo < 0xDC00 || lo > 0xDFFF) return UNSUPPORTED;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
                if (cp >= 0x80) ascii = 0;
                put_utf8(arena, cp);
                continue;
            }
            default: return UNSUPPORTED;
            }
            arena->p[arena->n++] = lit;
            p += 2;
            continue;
        }
        if (c >= 0x80) ascii = 0;
        arena->p[arena->n++] = (char)c;
        p++;
    }
    return UNSUPPORTED;
}

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

typedef struct {
    jstr url, alt, title;
} link_t;

static int key_is(buf_t *arena, jstr *k, const char *name) {
    size_t n = strlen(name);
    return (size_t)k->len == n && memcmp(arena->p + k->off, name, n) == 0;
}

/* The object in [start, end] (both braces included): a flat object of string values whose
 * "path" is "IMG@/src". Duplicate keys: the last one wins (as in orjson). */
static int parse_link(const char *start, const char *end, buf_t *arena, link_t *link) {
    const char *p = skip_ws(start + 1, end), *stop = end + 1;
    jstr path = {0}, key, val;
    memset(link, 0, sizeof *link);
    if (p < stop && *p == '}') return p == end ? UNSUPPORTED /* {} has no path */ : UNSUPPORTED;
    for (;;) {
        int r;
        if (p >= stop || *p != '"') return UNSUPPORTED;
        if ((r = parse_string(&p, stop, arena, &key)) != OK) return r;
        p = skip_ws(p, stop);
        if (p >= stop || *p != ':') return UNSUPPORTED;
        p = skip_ws(p + 1, stop);
        if (p >= stop || *p != '"') return UNSUPPORTED;  /* only string values */
        if ((r = parse_string(&p, stop, arena, &val)) != OK) return r;
        if (key_is(arena, &key, "path")) path = val;
        else if (key_is(arena, &key, "url")) link->url = val;
        else if (key_is(arena, &key, "alt")) link->alt = val;
        else if (key_is(arena, &key, "title")) link->title = val;
        p = skip_ws(p, stop);
        if (p >= stop) return UNSUPPORTED;
        if (*p == ',') { p = skip_ws(p + 1, stop); continue; }
        if (*p == '}' && p == end) break;
        return UNSUPPORTED;
    }
    if (!path.present || path.len != 8 || memcmp(arena->p + path.off, "IMG@/src", 8) != 0) return UNSUPPORTED;
    return OK;
}

/* ---------------------------------------------------------------- URL fast path */

/* bytes allowed in the path/query of a URL the WHATWG serialiser leaves alone (urls._CLEAN) */
static unsigned char PATHOK[256];
static unsigned char HOSTOK[256];

static void init_tables(void) {
    const char *path = "!$%&()*+,-./0123456789:;=?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_abcdefghijklmnopqrstuvwxyz|~";
    for (const char *c = path; *c; c++) PATHOK[(unsigned char)*c] = 1;
    for (int c = 'a'; c <= 'z'; c++) HOSTOK[c] = 1;
    for (int c = '0'; c <= '9'; c++) HOSTOK[c] = 1;
    HOSTOK['-'] = 1;
}

/* "/." somewhere in s[0:n] (a dot segment, or a dotfile: left to the Python loop) */
static int has_slash_dot(const char *s, Py_ssize_t n) {
    const char *p = s, *end = s + n;
    while (n > 1 && (p = memchr(p, '/', (end - 1) - p)) != NULL) {
        if (p[1] == '.') return 1;
        p++;
    }
    return 0;
}

/* What makes a URL not plainly in normal form for is_clean: "/.", "%2e"/"%2E", "xn--".
 * One pass over the bytes (it was four memmem calls a URL). */
static int url_suspect(const char *u, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i + 1 < n; i++) {
        char c = u[i];
        if (c == '/') { if (u[i + 1] == '.') return 1; }
        else if (c == '%') { if (i + 2 < n && u[i + 1] == '2' && (u[i + 2] == 'e' || u[i + 2] == 'E')) return 1; }
        else if (c == 'x') { if (i + 3 < n && u[i + 1] == 'n' && u[i + 2] == '-' && u[i + 3] == '-') return 1; }
    }
    return 0;
}

static int lower_eq(const char *s, const char *lit, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c += 32;
        if (c != lit[i]) return 0;
    }
    return 1;
}

/* urls.normalize_url's fast path: the URL is returned unchanged by the WHATWG parser.
 * On success *host, *hostlen is the host (without a trailing dot) and *slash the index of
 * the path's first "/". */
static int is_clean(const char *u, Py_ssize_t n, Py_ssize_t *host, Py_ssize_t *hostlen, Py_ssize_t *slash,
                    Py_ssize_t *spaces) {
    Py_ssize_t i;
    if (n >= 7 && memcmp(u, "http://", 7) == 0) i = 7;
    else if (n >= 8 && memcmp(u, "https://", 8) == 0) i = 8;
    else return 0;
    Py_ssize_t h = i, label = i;
    while (i < n && u[i] != '/') {
        unsigned char c = (unsigned char)u[i];
        if (c == '.') {
            if (i == label) return 0;  /* empty label */
            label = i + 1;
        } else if (!HOSTOK[c]) return 0;
        i++;
    }
    if (i >= n) return 0;  /* no path "/" */
    Py_ssize_t hend = i;
    if (hend > h && u[hend - 1] == '.') hend--;  /* one trailing dot is allowed */
    if (hend == h || u[hend - 1] == '.') return 0;
    /* the last label starts with a letter (not an IPv4 number in any radix) */
    Py_ssize_t last = hend - 1;
    while (last > h && u[last - 1] != '.') last--;
    if (!(u[last] >= 'a' && u[last] <= 'z')) return 0;
    Py_ssize_t sp = 0;
    int query = 0;
    for (Py_ssize_t j = i; j < n; j++) {
        unsigned char c = (unsigned char)u[j];
        if (c == ' ') sp++;  /* what the serialiser changes in path and query: %20 */
        else if (!PATHOK[c]) return 0;
        else if (c == '?') query = 1;
        /* "^" is in the WHATWG path percent-encode set (ada writes %5E) but urls._CLEAN lets it
         * through unchanged: leave it to the Python loop, which gives whatever urls gives */
        else if (c == '^' && !query) return 0;
    }
    *spaces = sp;
    if (url_suspect(u, n)) return 0;
    *host = h;
    *hostlen = hend - h;
    *slash = i;
    return 1;
}

typedef struct {
    PyObject *schemes;  /* tuple of lower-case bytes */
    PyObject *exts;     /* tuple of lower-case ASCII bytes ".svg", ... */
    Py_ssize_t max_url, max_dom, min_len, max_len, max_raw, max_links;
    int dedup;
} cfg_t;

enum { J_FALLBACK = 0, J_URL, J_DROP };

static int scheme_allowed(cfg_t *cfg, const char *s, Py_ssize_t n) {
    Py_ssize_t k = PyTuple_GET_SIZE(cfg->schemes);
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *b = PyTuple_GET_ITEM(cfg->schemes, i);
        if (PyBytes_GET_SIZE(b) == n && lower_eq(s, PyBytes_AS_STRING(b), n)) return 1;
    }
    return 0;
}

/* One href through resolve + the URL filters. J_URL: out holds the URL, *host, *hostlen its
 * host; J_DROP: *reason names the drop; J_FALLBACK: Python must judge it. */
static int judge_fast(cfg_t *cfg, const char *href, Py_ssize_t n, const char *origin, Py_ssize_t olen,
                      const char *dir, Py_ssize_t dlen, buf_t *out, Py_ssize_t *host, Py_ssize_t *hostlen,
                      const char **reason) {
    /* clean_href: strip C0 and space at both ends; anything inside that is not printable
     * ASCII (tabs, newlines, spaces, non-ASCII) goes to Python */
    while (n > 0 && (unsigned char)href[0] <= 0x20) { href++; n--; }
    while (n > 0 && (unsigned char)href[n - 1] <= 0x20) n--;
    if (n == 0) { *reason = "empty_url"; return J_DROP; }
    int amp = 0, semi = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)href[i];
        if (c < 0x20 || c >= 0x7f || c == '\\') return J_FALLBACK;  /* inner spaces: see is_clean */
        if (c == '&') amp = 1;
        else if (c == ';') semi = 1;
    }
    if (amp && semi) return J_FALLBACK;  /* character references: decode_attr_url */
    out->n = 0;
    if ((n >= 7 && lower_eq(href, "http://", 7)) || (n >= 8 && lower_eq(href, "https://", 8))) {
        if (buf_reserve(out, n) < 0) return -1;
        memcpy(out->p, href, n);
        out->n = n;
    } else {
        const char *colon = memchr(href, ':', n);
        if (colon) {
            Py_ssize_t k = colon - href;
            int scheme = k > 0 && ((href[0] | 32) >= 'a' && (href[0] | 32) <= 'z');
            for (Py_ssize_t i = 0; scheme && i < k; i++) {
                char c = href[i];
                scheme = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
                         c == '-' || c == '.';
            }
            if (scheme) {
                if (scheme_allowed(cfg, href, k)) return J_FALLBACK;
                *reason = (k == 4 && lower_eq(href, "data", 4)) ? "data_uri" : "scheme";
                return J_DROP;
            }
        }
        if (!origin || href[0] == '?' || href[0] == '#' || (n >= 2 && href[0] == '/' && href[1] == '/'))
            return J_FALLBACK;
        if (href[0] == '.') {
            /* urls._climb: leading "../" and "./" runs pop directories off the base directory */
            Py_ssize_t i = 0, up = 0;
            for (;;) {
                if (n - i >= 3 && href[i] == '.' && href[i + 1] == '.' && href[i + 2] == '/') { up++; i += 3; }
                else if (n - i >= 2 && href[i] == '.' && href[i + 1] == '/') i += 2;
                else break;
            }
            const char *rest = href + i;
            Py_ssize_t rlen = n - i;
            if (i == 0 || (rlen && rest[0] == '.') || has_slash_dot(rest, rlen)) return J_FALLBACK;
            Py_ssize_t dl = dlen, root = olen + 1;  /* dir[root - 1] is the path's first "/" */
            for (Py_ssize_t u = 0; u < up; u++) {
                if (dl <= root) break;
                Py_ssize_t k = dl - 2;
                while (k > root - 1 && dir[k] != '/') k--;
                dl = k + 1;
            }
            if (buf_reserve(out, dl + rlen) < 0) return -1;
            memcpy(out->p, dir, dl);
            memcpy(out->p + dl, rest, rlen);
            out->n = dl + rlen;
            goto resolved;
        }
        const char *pre = href[0] == '/' ? origin : dir;
        Py_ssize_t plen = href[0] == '/' ? olen : dlen;
        if (buf_reserve(out, plen + n) < 0) return -1;
        memcpy(out->p, pre, plen);
        memcpy(out->p + plen, href, n);
        out->n = plen + n;
        if (has_slash_dot(out->p, out->n)) return J_FALLBACK;
    }
resolved:;
    char *hash = memchr(out->p, '#', out->n);
    if (hash) out->n = hash - out->p;
    /* a space before a dropped fragment ends the URL: the WHATWG parser strips it, leave it to ada */
    if (out->n && out->p[out->n - 1] == ' ') return J_FALLBACK;
    Py_ssize_t slash, spaces;
    if (!is_clean(out->p, out->n, host, hostlen, &slash, &spaces)) return J_FALLBACK;  /* ada decides */
    if (spaces) {  /* percent-encode spaces (after the host: is_clean allows none before) */
        if (buf_reserve(out, 2 * spaces) < 0) return -1;
        for (Py_ssize_t j = out->n - 1, k = out->n + 2 * spaces - 1; j >= slash; j--) {
            if (out->p[j] == ' ') { out->p[k--] = '0'; out->p[k--] = '2'; out->p[k--] = '%'; }
            else out->p[k--] = out->p[j];
        }
        out->n += 2 * spaces;
    }
    if (out->n > cfg->max_url) { *reason = "url_too_long"; return J_DROP; }
    if (*hostlen > cfg->max_dom) { *reason = "domain_too_long"; return J_DROP; }
    Py_ssize_t end = out->n;
    const char *q = memchr(out->p, '?', out->n);
    if (q) end = q - out->p;
    Py_ssize_t k = PyTuple_GET_SIZE(cfg->exts);
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *t = PyTuple_GET_ITEM(cfg->exts, i);
        Py_ssize_t tl = PyBytes_GET_SIZE(t);
        if (end - tl >= slash + 1 && lower_eq(out->p + end - tl, PyBytes_AS_STRING(t), tl)) {
            *reason = "extension";
            return J_DROP;
        }
    }
    return J_URL;
}

/* ---------------------------------------------------------------- a set of 32-byte keys */

/* Open addressing, grown at half full: a page's uid digests (wat_links' in-page dedup) and a
 * file's uid strings (UidSet, the job's per-file dedup). */
typedef struct {
    uint8_t (*slots)[32];
    uint8_t *used;
    size_t cap, n;
} kset;

static uint64_t hash_bytes(const uint8_t *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001B3ull;
    return h ^ (h >> 29);
}

static void kset_free(kset *s) {
    PyMem_Free(s->slots);
    PyMem_Free(s->used);
    s->slots = NULL;
    s->used = NULL;
    s->cap = s->n = 0;
}

/* 1: the key is new (now added), 0: it was there, -1: no memory */
static int kset_add(kset *s, const uint8_t k[32]) {
    if ((s->n + 1) * 2 > s->cap) {
        kset g = {NULL, NULL, s->cap ? s->cap * 2 : 64, 0};
        g.slots = PyMem_Malloc(g.cap * 32);
        g.used = PyMem_Calloc(g.cap, 1);
        if (!g.slots || !g.used) { kset_free(&g); PyErr_NoMemory(); return -1; }
        for (size_t i = 0; i < s->cap; i++)
            if (s->used[i]) kset_add(&g, s->slots[i]); /* g has room: cannot fail */
        kset_free(s);
        *s = g;
    }
    size_t i = (size_t)hash_bytes(k, 32) & (s->cap - 1);
    for (; s->used[i]; i = (i + 1) & (s->cap - 1))
        if (memcmp(s->slots[i], k, 32) == 0) return 0;
    s->used[i] = 1;
    memcpy(s->slots[i], k, 32);
    s->n++;
    return 1;
}

/* ---------------------------------------------------------------- helpers */

static PyObject *ascii_str(const char *s, Py_ssize_t n) {
    PyObject *u = PyUnicode_New(n, 127);
    if (u) memcpy(PyUnicode_1BYTE_DATA(u), s, n);
    return u;
}

static PyObject *str_of(buf_t *arena, jstr *j) {
    return j->ascii ? ascii_str(arena->p + j->off, j->len) : PyUnicode_DecodeUTF8(arena->p + j->off, j->len, NULL);
}

/* `s and not s.isspace()` */
static int usable(buf_t *arena, jstr *j) {
    if (!j->present || j->len == 0) return 0;
    const unsigned char *p = (const unsigned char *)arena->p + j->off;
    if (j->ascii) {
        for (Py_ssize_t i = 0; i < j->len; i++) {
            unsigned char c = p[i];
            if (!(c == ' ' || (c >= 9 && c <= 13) || (c >= 28 && c <= 31))) return 1;
        }
        return 0;
    }
    PyObject *u = str_of(arena, j);
    if (!u) return -1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(u);
    int kind = PyUnicode_KIND(u);
    const void *data = PyUnicode_DATA(u);
    int r = 0;
    for (Py_ssize_t i = 0; i < n && !r; i++)
        if (!Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i))) r = 1;
    Py_DECREF(u);
    return r;
}

/* drops[reason] += n */
static int count_drop_n(PyObject *drops, PyObject *reason, long n) {
    PyObject *v = PyDict_GetItemWithError(drops, reason);
    if (!v && PyErr_Occurred()) return -1;
    PyObject *nv = PyLong_FromLong((v ? PyLong_AsLong(v) : 0) + n);
    if (!nv) return -1;
    int r = PyDict_SetItem(drops, reason, nv);
    Py_DECREF(nv);
    return r;
}

static int count_drop(PyObject *drops, PyObject *reason) { return count_drop_n(drops, reason, 1); }

static int count_drop_c(PyObject *drops, const char *reason, long n) {
    PyObject *k = PyUnicode_InternFromString(reason);
    if (!k) return -1;
    int r = count_drop_n(drops, k, n);
    Py_DECREF(k);
    return r;
}

/* A page's drops by reason (C string literals, compared by address), added to the caller's
 * dict once per page instead of a dict update per link */
typedef struct {
    const char *why[16];
    long n[16];
    int k;
} tally_t;

static int tally_add(tally_t *t, PyObject *drops, const char *reason) {
    for (int i = 0; i < t->k; i++)
        if (t->why[i] == reason) { t->n[i]++; return 0; }
    if (t->k == 16) return count_drop_c(drops, reason, 1); /* never with today's reasons */
    t->why[t->k] = reason;
    t->n[t->k++] = 1;
    return 0;
}

static int tally_flush(tally_t *t, PyObject *drops) {
    for (int i = 0; i < t->k; i++)
        if (count_drop_c(drops, t->why[i], t->n[i]) < 0) return -1;
    return 0;
}

static PyObject *S_ALT, *S_TITLE;

/* ---------------------------------------------------------------- flags */

/* First occurrence of `needle` (length k) in s[0:n]. Candidates are the positions where the
 * needle's bytes `a` and `b` both match, tested 16 positions at a time (SSE2); a pair such as
 * "G@" is rare in WAT JSON where any single byte ('@', '/') occurs in every link. */
#ifdef HAVE_SHANI_CODE
static int use_avx2;
__attribute__((target("avx2")))
static Py_ssize_t find2_avx2(const char *s, Py_ssize_t last, const char *needle, Py_ssize_t k, int a, int b,
                             const char **hit) {
    const __m256i va = _mm256_set1_epi8(needle[a]), vb = _mm256_set1_epi8(needle[b]);
    Py_ssize_t p = 0;
    for (; p + 31 <= last; p += 32) {
        __m256i x = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(s + p + a)), va),
                                     _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(s + p + b)), vb));
        if (_mm256_testz_si256(x, x)) continue;
        for (unsigned m = (unsigned)_mm256_movemask_epi8(x); m; m &= m - 1) {
            int i = __builtin_ctz(m);
            if (memcmp(s + p + i, needle, k) == 0) { *hit = s + p + i; return p; }
        }
    }
    return p;
}
#endif

static const char *find2(const char *s, Py_ssize_t n, const char *needle, Py_ssize_t k, int a, int b) {
    if (n < k) return NULL;
    Py_ssize_t last = n - k, p = 0; /* the last possible start */
#ifdef HAVE_SHANI_CODE
    if (use_avx2) {
        const char *hit = NULL;
        p = find2_avx2(s, last, needle, k, a, b, &hit);
        if (hit) return hit;
    }
#endif
#if defined(__SSE2__)
    const __m128i va = _mm_set1_epi8(needle[a]), vb = _mm_set1_epi8(needle[b]);
    for (; p + 15 <= last; p += 16) { /* reads s[p + a .. p + b + 15], all < n */
        __m128i x = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(s + p + a)), va);
        __m128i y = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(s + p + b)), vb);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_and_si128(x, y));
        while (m) {
            int i = __builtin_ctz(m);
            if (memcmp(s + p + i, needle, k) == 0) return s + p + i;
            m &= m - 1;
        }
    }
#endif
    for (; p <= last; p++)
        if (s[p + a] == needle[a] && s[p + b] == needle[b] && memcmp(s + p, needle, k) == 0) return s + p;
    return NULL;
}

/* Whether s[p:] starts with `lit` (length k), within s[0:n] */
static int at(const char *s, Py_ssize_t n, Py_ssize_t p, const char *lit, Py_ssize_t k) {
    return p + k <= n && memcmp(s + p, lit, k) == 0;
}

static const char IMG[] = "IMG@", BASE[] = "\"Base\"", CC[] = "creativecommons.org";

/* the candidates a vector step of scan_flags found (bit i: position p + i), checked in full */
static void flag_hits(const char *s, Py_ssize_t n, Py_ssize_t p, unsigned mi, unsigned mb, unsigned mc, long *f,
                      Py_ssize_t *base) {
    for (; mi && !(*f & 1); mi &= mi - 1)
        if (at(s, n, p + __builtin_ctz(mi), IMG, 4)) *f |= 1;
    for (; mb && !(*f & 2); mb &= mb - 1)
        if (at(s, n, p + __builtin_ctz(mb), BASE, 6)) { *f |= 2; *base = p + __builtin_ctz(mb); }
    for (; mc && !(*f & 4); mc &= mc - 1)
        if (at(s, n, p + __builtin_ctz(mc), CC, 19)) *f |= 4;
}

#ifdef HAVE_SHANI_CODE
/* scan_flags' loop 32 positions at a time (AVX2: every x86-64 server CPU since 2013); returns
 * the position where the scalar tail goes on */
__attribute__((target("avx2")))
static Py_ssize_t scan_flags_avx2(const char *s, Py_ssize_t n, long *fp, Py_ssize_t *base) {
    long f = *fp;
    Py_ssize_t p = 0;
    const __m256i g = _mm256_set1_epi8('G'), at_ = _mm256_set1_epi8('@'), B = _mm256_set1_epi8('B'),
                  q = _mm256_set1_epi8('"'), v = _mm256_set1_epi8('v'), ss = _mm256_set1_epi8('s');
    for (; p + 32 + 14 <= n && f != 7; p += 32) { /* reads s[p + 1 .. p + 45] */
#define LD(o) _mm256_loadu_si256((const __m256i *)(s + p + (o)))
        __m256i mi_ = _mm256_and_si256(_mm256_cmpeq_epi8(LD(2), g), _mm256_cmpeq_epi8(LD(3), at_));
        __m256i mb_ = _mm256_and_si256(_mm256_cmpeq_epi8(LD(1), B), _mm256_cmpeq_epi8(LD(5), q));
        __m256i mc_ = _mm256_and_si256(_mm256_cmpeq_epi8(LD(6), v), _mm256_cmpeq_epi8(LD(14), ss));
#undef LD
        if (_mm256_testz_si256(_mm256_or_si256(_mm256_or_si256(mi_, mb_), mc_), _mm256_set1_epi8(-1))) continue;
        unsigned mi = (unsigned)_mm256_movemask_epi8(mi_), mb = (unsigned)_mm256_movemask_epi8(mb_),
                 mc = (unsigned)_mm256_movemask_epi8(mc_);
        flag_hits(s, n, p, mi, mb, mc, &f, base);
    }
    *fp = f;
    return p;
}

static int cpu_has_avx2(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((b >> 5) & 1)) return 0; /* AVX2 */
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return 0; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6) == 6; /* the OS saves the YMM registers */
}
#endif

/* One pass over a payload for the three needles of `flags`: the first "IMG@", the first
 * "\"Base\"", any "creativecommons.org". Candidates by byte pairs, 16 positions at a time
 * (IMG@: "G@"; "Base": 'B' and the closing quote; creativecommons.org: 'v' and 's'). */
static long scan_flags(const char *s, Py_ssize_t n, Py_ssize_t *base) {
    long f = 0;
    *base = -1;
    Py_ssize_t p = 0;
#ifdef HAVE_SHANI_CODE
    if (use_avx2) p = scan_flags_avx2(s, n, &f, base);
#endif
#if defined(__SSE2__)
    const __m128i g = _mm_set1_epi8('G'), at_ = _mm_set1_epi8('@'), B = _mm_set1_epi8('B'), q = _mm_set1_epi8('"'),
                  v = _mm_set1_epi8('v'), ss = _mm_set1_epi8('s');
    for (; p + 16 + 14 <= n && f != 7; p += 16) { /* reads s[p + 1 .. p + 29] */
#define LD(o) _mm_loadu_si128((const __m128i *)(s + p + (o)))
        __m128i l1 = LD(1), l2 = LD(2), l3 = LD(3), l5 = LD(5), l6 = LD(6), l14 = LD(14);
#undef LD
        __m128i mi_ = _mm_and_si128(_mm_cmpeq_epi8(l2, g), _mm_cmpeq_epi8(l3, at_));
        __m128i mb_ = _mm_and_si128(_mm_cmpeq_epi8(l1, B), _mm_cmpeq_epi8(l5, q));
        __m128i mc_ = _mm_and_si128(_mm_cmpeq_epi8(l6, v), _mm_cmpeq_epi8(l14, ss));
        if (!_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(mi_, mb_), mc_))) continue;
        unsigned mi = (unsigned)_mm_movemask_epi8(mi_), mb = (unsigned)_mm_movemask_epi8(mb_),
                 mc = (unsigned)_mm_movemask_epi8(mc_);
        flag_hits(s, n, p, mi, mb, mc, &f, base);
    }
#endif
    for (; p < n && f != 7; p++) {
        if (!(f & 1) && s[p] == 'I' && at(s, n, p, IMG, 4)) f |= 1;
        if (!(f & 2) && s[p] == '"' && at(s, n, p, BASE, 6)) { f |= 2; *base = p; }
        if (!(f & 4) && s[p] == 'c' && at(s, n, p, CC, 19)) f |= 4;
    }
    return f;
}

/* `flags`' bits for a payload: 1: IMG@, 2: "Base" (its offset in *base, else -1), 4:
 * creativecommons.org, 8: payload[-8:].rstrip() ends with "}" (a whole JSON object, as far as
 * the tail tells); the other bits only where IMG@ is there */
static long page_flags(const char *s, Py_ssize_t n, Py_ssize_t *base) {
    long f = scan_flags(s, n, base);
    if (!(f & 1)) { *base = -1; return 0; }
    const unsigned char *e = (const unsigned char *)s + n, *lo = n > 8 ? e - 8 : (const unsigned char *)s;
    while (e > lo && (e[-1] == ' ' || (e[-1] >= 9 && e[-1] <= 13))) e--;
    if (e > lo && e[-1] == '}') f |= 8;
    return f;
}

/* (page_flags' bits, offset of the first "Base" or -1) */
static PyObject *hot_flags(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t base;
    long f = page_flags(b.buf, b.len, &base);
    PyBuffer_Release(&b);
    return Py_BuildValue("ln", f, base);
}

/* ---------------------------------------------------------------- a record's head */

/* warcread.iter_records' fast path for one inflated gzip member holding one record: the
 * common case of its Python code (CRLF header, "\r\nContent-Length: <digits>", tail of CR/LF
 * only). 1: the header is s[0:*hlen], the payload s[*hlen + 4 : *hlen + 4 + *clen], the
 * WARC-Type value s[*tv : *tv + *tlen] (*tlen -1: no WARC-Type; *lower: all of it a-z);
 * 0: anything else (the Python code then decides as before). */
static int parse_head(const char *s, Py_ssize_t n, Py_ssize_t maxrec, Py_ssize_t maxhdr, Py_ssize_t *hlen,
                      Py_ssize_t *clen_out, Py_ssize_t *tv_out, Py_ssize_t *tlen, int *lower_out) {
    if (n < 5 || memcmp(s, "WARC/", 5) != 0) return 0;
    const char *nl = memchr(s, '\n', n < 32 ? n : 32);
    if (nl == NULL || nl == s || nl[-1] != '\r') return 0;
    const char *e = memmem(s, n < maxhdr ? n : maxhdr, "\r\n\r\n", 4);
    if (e == NULL || e == s) return 0;
    Py_ssize_t i = e - s;
    const char *k = memmem(s, i, "\r\nContent-Length: ", 18);
    if (k == NULL) return 0;
    const char *v = k + 18, *ve = memchr(v, '\r', (s + i) - v);
    if (ve == NULL) ve = s + i;
    if (ve == v || ve - v > 18) return 0;
    Py_ssize_t clen = 0;
    for (const char *c = v; c < ve; c++) {
        if (*c < '0' || *c > '9') return 0;
        clen = clen * 10 + (*c - '0');
    }
    Py_ssize_t stop = i + 4 + clen;
    if (clen > maxrec || stop > n) return 0;
    for (Py_ssize_t t = stop; t < n; t++)
        if (s[t] != '\r' && s[t] != '\n') return 0;
    *tlen = -1;
    *lower_out = 0;
    const char *w = memmem(s, i, "\r\nWARC-Type: ", 13);
    if (w != NULL) {
        const char *tv = w + 13, *te = memchr(tv, '\r', (s + i) - tv);
        if (te == NULL) te = s + i;
        int lower = te > tv;
        for (const char *c = tv; c < te && lower; c++) lower = *c >= 'a' && *c <= 'z';
        *tv_out = tv - s;
        *tlen = te - tv;
        *lower_out = lower;
    }
    *hlen = i;
    *clen_out = clen;
    return 1;
}

/* s[a:b] of a bytes-like object as a memoryview of it (no copy) */
static PyObject *view_of(PyObject *obj, Py_ssize_t a, Py_ssize_t b) {
    PyObject *view = PyMemoryView_FromObject(obj);
    if (!view) return NULL;
    PyObject *start = PyLong_FromSsize_t(a), *stop = PyLong_FromSsize_t(b), *sl = NULL, *res = NULL;
    if (start && stop && (sl = PySlice_New(start, stop, NULL))) res = PyObject_GetItem(view, sl);
    Py_XDECREF(sl); Py_XDECREF(start); Py_XDECREF(stop);
    Py_DECREF(view);
    return res;
}

/* (header, payload view, rtype | None) | None: parse_head on one member (warcread: the general
 * path's members, and the tests). rtype None: the Python code reads an odd spelling. */
static PyObject *hot_record(PyObject *self, PyObject *args) {
    Py_buffer b;
    PyObject *member;
    Py_ssize_t maxrec, maxhdr, hlen, clen, tv = 0, tlen;
    int lower;
    if (!PyArg_ParseTuple(args, "Onn", &member, &maxrec, &maxhdr)) return NULL;
    if (PyObject_GetBuffer(member, &b, PyBUF_SIMPLE) < 0) return NULL;
    const char *s = b.buf;
    PyObject *res = NULL;
    if (!parse_head(s, b.len, maxrec, maxhdr, &hlen, &clen, &tv, &tlen, &lower)) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *rtype = lower ? PyUnicode_FromStringAndSize(s + tv, tlen) : Py_NewRef(Py_None);
    /* the payload as a view of the member: copying it (~30 KB a page) cost more than framing */
    PyObject *payload = rtype ? view_of(member, hlen + 4, hlen + 4 + clen) : NULL;
    if (!payload) { Py_XDECREF(rtype); goto done; }
    res = Py_BuildValue("(y#NN)", s, hlen, payload, rtype);
done:
    PyBuffer_Release(&b);
    return res;
}

static PyObject *S_DECOMPRESS, *S_EOF, *S_UNUSED, *S_METADATA;

/* d.decompress(buf[a:b][, limit]) on a view of the caller's buffer (kept alive by the caller) */
static PyObject *inflate_part(PyObject *d, const char *buf, Py_ssize_t a, Py_ssize_t b, PyObject *limit) {
    PyObject *mv = PyMemoryView_FromMemory((char *)buf + a, b - a, PyBUF_READ);
    if (!mv) return NULL;
    PyObject *args[3] = {d, mv, limit};
    PyObject *r = PyObject_VectorcallMethod(S_DECOMPRESS, args, limit ? 3 : 2, NULL);
    Py_DECREF(mv);
    return r;
}

/* warcread.iter_records' fast path over many members in one call:
 *   members(buf, pos, at_eof, decompressobj, max_record_bytes, max_header_bytes, fast_limit, skip_plain,
 *           first_window, fast_input) -> (records, pos, skipped)
 * From buf[pos:], while a member starts there and the next fast_input bytes are buffered (or the
 * file has ended), each member is inflated (the caller's isal decompressobj(31), first_window
 * bytes, then up to fast_input with output capped at fast_limit, as the Python loop does) and, where it ends
 * within that and holds one record parse_head accepts, becomes (offset in buf, rtype | None,
 * header, payload view, flags, first "Base"). It stops at the first member that is not so
 * (pos is that member: the Python code reads it) or at an inflate error (the same). With
 * skip_plain, a "metadata" record without IMG@ (two of three WAT records) is only counted in
 * `skipped`; flags / "Base" are `flags`' answer for metadata records and (0, -1) for others. */
static PyObject *hot_members(PyObject *self, PyObject *args) {
    PyObject *bufo, *decompressobj, *flimit;
    Py_ssize_t pos, maxrec, maxhdr, FIRST_WINDOW, FAST_INPUT;
    int at_eof, skip_plain;
    if (!PyArg_ParseTuple(args, "OnpOnnOpnn", &bufo, &pos, &at_eof, &decompressobj, &maxrec, &maxhdr, &flimit,
                          &skip_plain, &FIRST_WINDOW, &FAST_INPUT))
        return NULL;
    if (FIRST_WINDOW < 1 || FAST_INPUT < FIRST_WINDOW) { PyErr_SetString(PyExc_ValueError, "members: windows"); return NULL; }
    Py_buffer b;
    if (PyObject_GetBuffer(bufo, &b, PyBUF_SIMPLE) < 0) return NULL;
    const char *buf = b.buf;
    Py_ssize_t n = b.len, skipped = 0;
    PyObject *out = PyList_New(0), *wbits = PyLong_FromLong(31), *res = NULL;
    if (!out || !wbits) goto done;
    while (pos < n && (n - pos >= FAST_INPUT || at_eof)) {
        if (n - pos < 3 || (unsigned char)buf[pos] != 0x1f || (unsigned char)buf[pos + 1] != 0x8b || buf[pos + 2] != 8)
            break;
        PyObject *d = PyObject_CallOneArg(decompressobj, wbits);
        if (!d) goto done;
        Py_ssize_t a = pos, m1 = pos + FIRST_WINDOW < n ? pos + FIRST_WINDOW : n;
        PyObject *data = inflate_part(d, buf, a, m1, NULL);
        Py_ssize_t used = m1 - a;
        int eof = 0;
        if (data) {
            PyObject *e = PyObject_GetAttr(d, S_EOF);
            eof = e ? PyObject_IsTrue(e) : -1;
            Py_XDECREF(e);
            if (eof == 0) {
                Py_ssize_t m2 = pos + FAST_INPUT < n ? pos + FAST_INPUT : n;
                PyObject *more = inflate_part(d, buf, m1, m2, flimit);
                used += m2 - m1;
                if (more) {
                    PyBytes_Concat(&data, more);
                    Py_DECREF(more);
                } else Py_CLEAR(data);
                if (data) {
                    e = PyObject_GetAttr(d, S_EOF);
                    eof = e ? PyObject_IsTrue(e) : -1;
                    Py_XDECREF(e);
                }
            }
        }
        if (!data || eof < 0) { /* bad gzip data (or no memory): the Python code reads this member */
            Py_XDECREF(data);
            Py_DECREF(d);
            if (PyErr_ExceptionMatches(PyExc_MemoryError)) goto done;
            PyErr_Clear();
            break;
        }
        PyObject *unused = eof ? PyObject_GetAttr(d, S_UNUSED) : NULL;
        Py_DECREF(d);
        if (!eof) { Py_DECREF(data); break; }
        if (unused && !PyBytes_Check(unused)) {
            Py_CLEAR(unused);
            PyErr_SetString(PyExc_TypeError, "members: unused_data is not bytes");
        }
        if (!unused) { Py_DECREF(data); goto done; }
        Py_ssize_t next = pos + used - PyBytes_GET_SIZE(unused);
        Py_DECREF(unused);
        const char *s = PyBytes_AS_STRING(data);
        Py_ssize_t hlen, clen, tv = 0, tlen;
        int lower;
        if (!parse_head(s, PyBytes_GET_SIZE(data), maxrec, maxhdr, &hlen, &clen, &tv, &tlen, &lower)) {
            Py_DECREF(data);
            break;
        }
        long f = 0;
        Py_ssize_t base = -1;
        int meta = lower && tlen == 8 && memcmp(s + tv, "metadata", 8) == 0;
        if (meta) {
            f = page_flags(s + hlen + 4, clen, &base);
            if (skip_plain && !(f & 1)) {
                skipped++;
                Py_DECREF(data);
                pos = next;
                continue;
            }
        }
        PyObject *rtype = meta ? Py_NewRef(S_METADATA)
                          : lower ? PyUnicode_FromStringAndSize(s + tv, tlen) : Py_NewRef(Py_None);
        PyObject *payload = rtype ? view_of(data, hlen + 4, hlen + 4 + clen) : NULL;
        PyObject *rec = payload ? Py_BuildValue("(nNy#Nln)", pos, rtype, s, hlen, payload, f, base) : NULL;
        if (!payload) Py_XDECREF(rtype);
        Py_DECREF(data);
        if (!rec) goto done;
        int r = PyList_Append(out, rec);
        Py_DECREF(rec);
        if (r < 0) goto done;
        pos = next;
    }
    res = Py_BuildValue("(Onn)", out, pos, skipped);
done:
    Py_XDECREF(out);
    Py_XDECREF(wbits);
    PyBuffer_Release(&b);
    return res;
}

/* ---------------------------------------------------------------- fastText inference (lid.176.ftz) */

/* The prediction fastText's `predict(line, 1, 0.0)` makes, for the one kind of model language
 * ID uses: a supervised model with a product-quantized input matrix, a dense output matrix and
 * hierarchical softmax (lid.176.ftz). Why: in the library one caption costs ~8-20 us, mostly
 * iostream tokenising, a std::string per character n-gram and hash-map lookups; here the
 * n-gram hashes are computed in place. Every step keeps the library's float arithmetic in the
 * library's order (and its double-to-float conversions), so the label and the score are the
 * same bits: langid checks that on a sample at load and the tests on real captions; any other
 * model, or a mismatch, keeps the library. */

#define LID_KSUB 256

typedef struct {
    int32_t dim, minn, maxn, bucket, nwords, size, osz, nsubq, dsub, lastdsub, qnorm;
    int64_t m, prune_n;
    float *centroids, *norm_centroids, *wo;
    uint8_t *codes, *norm_codes;
    const char **word;   /* entry bytes (NUL-terminated copies) */
    int32_t *word_len, *word_type, *word_slot; /* word_slot: open-addressing table of entry ids */
    uint32_t word_cap;
    int32_t *prune_key, *prune_val; /* open addressing, key -1 = empty */
    uint32_t prune_cap;
    int32_t **sub, *nsub;           /* per entry: [id, n-gram rows...] (the library's subwords) */
    int32_t *left, *right;          /* the hierarchical-softmax tree, 2*osz-1 nodes */
    PyObject **label;               /* language code per label (without "__label__") */
    char *blob;                     /* the copied entry strings */
} lid_model;

static uint32_t lid_fnv(const uint8_t *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= (uint32_t)(int8_t)s[i]; h *= 16777619u; }
    return h;
}

static uint32_t lid_mix(uint32_t x) { x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; return x ^ (x >> 16); }

static int32_t lid_word_id(const lid_model *md, const uint8_t *w, size_t n) {
    uint32_t mask = md->word_cap - 1, i = lid_mix(lid_fnv(w, n)) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t e = md->word_slot[i];
        if (e < 0) return -1;
        if ((size_t)md->word_len[e] == n && memcmp(md->word[e], w, n) == 0) return e;
    }
}

/* fastText's pushHash: a bucket id to an input row (pruned models keep some buckets only) */
static int lid_push_bucket(const lid_model *md, int32_t id, int32_t **v, Py_ssize_t *n, Py_ssize_t *cap) {
    if (md->prune_n == 0 || id < 0) return 0;
    if (md->prune_n > 0) {
        uint32_t mask = md->prune_cap - 1, i = lid_mix((uint32_t)id) & mask;
        for (;; i = (i + 1) & mask) {
            if (md->prune_key[i] < 0) return 0;
            if (md->prune_key[i] == id) { id = md->prune_val[i]; break; }
        }
    }
    if (*n == *cap) {
        Py_ssize_t nc = *cap ? 2 * *cap : 64;
        int32_t *nv = PyMem_Realloc(*v, (size_t)nc * sizeof(int32_t));
        if (!nv) return -1;
        *v = nv; *cap = nc;
    }
    (*v)[(*n)++] = md->nwords + id;
    return 0;
}

/* fastText's computeSubwords over "<" word ">": every run of minn..maxn UTF-8 characters */
static int lid_subwords(const lid_model *md, const uint8_t *tok, size_t tn, int32_t **v, Py_ssize_t *n, Py_ssize_t *cap) {
    uint8_t stackbuf[512];
    size_t len = tn + 2;
    uint8_t *w = len <= sizeof stackbuf ? stackbuf : PyMem_Malloc(len);
    if (!w) return -1;
    w[0] = '<';
    memcpy(w + 1, tok, tn);
    w[len - 1] = '>';
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        if ((w[i] & 0xC0) == 0x80) continue;
        uint32_t h = 2166136261u;
        size_t j = i;
        for (int32_t k = 1; j < len && k <= md->maxn; k++) {
            h ^= (uint32_t)(int8_t)w[j]; h *= 16777619u; j++;
            while (j < len && (w[j] & 0xC0) == 0x80) { h ^= (uint32_t)(int8_t)w[j]; h *= 16777619u; j++; }
            if (k >= md->minn && !(k == 1 && (i == 0 || j == len)))
                if (lid_push_bucket(md, (int32_t)(h % (uint32_t)md->bucket), v, n, cap) < 0) { rc = -1; break; }
        }
    }
    if (w != stackbuf) PyMem_Free(w);
    return rc;
}

static int lid_is_sep(uint8_t c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f' || c == 0; }

static float lid_std_log(float x) { return (float)log((double)x + 1e-5); }

static void lid_dfs(const lid_model *md, int32_t node, float score, const float *hid, float thr_log, int *found,
                    float *best, int32_t *best_node) {
    if (score < thr_log) return;
    if (*found && score < *best) return;
    if (md->left[node] == -1 && md->right[node] == -1) {
        *found = 1; *best = score; *best_node = node; /* ties go to the later leaf, as the library's heap does */
        return;
    }
    const float *row = md->wo + (size_t)(node - md->osz) * md->dim;
    float f = 0.0f;
    for (int32_t j = 0; j < md->dim; j++) f += row[j] * hid[j];
    f = (float)(1. / (double)(1.0f + expf(-f)));
    lid_dfs(md, md->left[node], score + lid_std_log((float)(1.0 - (double)f)), hid, thr_log, found, best, best_node);
    lid_dfs(md, md->right[node], score + lid_std_log(f), hid, thr_log, found, best, best_node);
}

/* One line (UTF-8 bytes ending in "\n"): 1 and (label index, probability), or 0 (no prediction), -1 on error. */
static int lid_predict(const lid_model *md, const uint8_t *s, size_t n, int32_t *label, float *prob) {
    int32_t *ids = NULL;
    Py_ssize_t nid = 0, cap = 0;
    size_t p = 0;
    int rc = 0;
    for (;;) {
        /* fastText's readWord: separators end a word; a "\n" met with no word is the token "</s>" */
        size_t a = p;
        int eos = 0, more = 0;
        while (p < n) {
            uint8_t c = s[p];
            if (!lid_is_sep(c)) break;
            p++;
            if (c == '\n') { eos = 1; break; }
        }
        const uint8_t *tok;
        size_t tn;
        if (eos) { tok = (const uint8_t *)"</s>"; tn = 4; more = 1; }
        else {
            a = p;
            while (p < n && !lid_is_sep(s[p])) p++;
            tok = s + a; tn = p - a;
            more = tn > 0;
        }
        if (!more) break;
        int32_t wid = lid_word_id(md, tok, tn);
        int is_label = wid >= 0 ? md->word_type[wid] == 1 : (tn >= 9 && memcmp(tok, "__label__", 9) == 0);
        if (!is_label) {
            if (wid >= 0) {
                for (int32_t k = 0; k < md->nsub[wid]; k++) {
                    if (nid == cap) {
                        Py_ssize_t nc = cap ? 2 * cap : 64;
                        int32_t *nv = PyMem_Realloc(ids, (size_t)nc * sizeof(int32_t));
                        if (!nv) { rc = -1; goto out; }
                        ids = nv; cap = nc;
                    }
                    ids[nid++] = md->sub[wid][k];
                }
            } else if (!(tn == 4 && memcmp(tok, "</s>", 4) == 0)) {
                if (lid_subwords(md, tok, tn, &ids, &nid, &cap) < 0) { rc = -1; goto out; }
            }
        }
        if (tn == 4 && memcmp(tok, "</s>", 4) == 0) break;
    }
    if (nid == 0) goto out;
    float hid[64];
    for (int32_t j = 0; j < md->dim; j++) hid[j] = 0.0f;
    for (Py_ssize_t t = 0; t < nid; t++) {
        int32_t r = ids[t];
        float alpha = md->qnorm ? md->norm_centroids[md->norm_codes[r]] : 1.0f;
        const uint8_t *code = md->codes + (size_t)md->nsubq * r;
        int32_t d = md->dsub;
        for (int32_t m = 0; m < md->nsubq; m++) {
            const float *c;
            if (m == md->nsubq - 1) { d = md->lastdsub; c = md->centroids + (size_t)m * LID_KSUB * md->dsub + (size_t)code[m] * md->lastdsub; }
            else c = md->centroids + ((size_t)m * LID_KSUB + code[m]) * md->dsub;
            for (int32_t k = 0; k < d; k++) hid[m * md->dsub + k] += alpha * c[k];
        }
    }
    float scale = (float)(1.0 / (double)nid);
    for (int32_t j = 0; j < md->dim; j++) hid[j] *= scale;
    int found = 0;
    float best = 0.0f;
    int32_t node = -1;
    lid_dfs(md, 2 * md->osz - 2, 0.0f, hid, lid_std_log(0.0f), &found, &best, &node);
    if (found) { *label = node; *prob = expf(best); rc = 1; }
out:
    PyMem_Free(ids);
    return rc;
}

static void lid_model_free(lid_model *md) {
    if (!md) return;
    if (md->sub) for (int32_t i = 0; i < md->size; i++) PyMem_Free(md->sub[i]);
    if (md->label) for (int32_t i = 0; i < md->osz; i++) Py_XDECREF(md->label[i]);
    PyMem_Free(md->sub); PyMem_Free(md->nsub); PyMem_Free(md->label);
    PyMem_Free(md->centroids); PyMem_Free(md->norm_centroids); PyMem_Free(md->wo);
    PyMem_Free(md->codes); PyMem_Free(md->norm_codes); PyMem_Free((void *)md->word); PyMem_Free(md->word_len);
    PyMem_Free(md->word_type); PyMem_Free(md->word_slot); PyMem_Free(md->prune_key); PyMem_Free(md->prune_val);
    PyMem_Free(md->left); PyMem_Free(md->right); PyMem_Free(md->blob);
    PyMem_Free(md);
}

static void lid_capsule_free(PyObject *cap) { lid_model_free(PyCapsule_GetPointer(cap, "crawlpairs.lid_model")); }

typedef struct { const uint8_t *p; size_t n, o; const char *err; } lid_rd;

static int rd_get(lid_rd *r, void *dst, size_t k) {
    if (r->err) return -1;
    if (k > r->n - r->o) { r->err = "truncated model file"; return -1; }
    memcpy(dst, r->p + r->o, k);
    r->o += k;
    return 0;
}

static int32_t rd_i32(lid_rd *r) { int32_t v = 0; rd_get(r, &v, 4); return v; }
static int64_t rd_i64(lid_rd *r) { int64_t v = 0; rd_get(r, &v, 8); return v; }
static uint8_t rd_u8(lid_rd *r) { uint8_t v = 0; rd_get(r, &v, 1); return v; }

static float *rd_floats(lid_rd *r, size_t k) {
    float *f = PyMem_Malloc(k * sizeof(float) + 1);
    if (!f) { r->err = "out of memory"; return NULL; }
    if (rd_get(r, f, k * sizeof(float)) < 0) { PyMem_Free(f); return NULL; }
    return f;
}

static uint32_t pow2_at_least(uint64_t x) { uint32_t c = 16; while (c < x) c <<= 1; return c; }

/* lid_model(data: bytes) -> capsule; ValueError(reason) for any model this code does not handle */
static PyObject *hot_lid_model(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    lid_rd r = {b.buf, (size_t)b.len, 0, NULL};
    lid_model *md = PyMem_Calloc(1, sizeof *md);
    PyObject *res = NULL;
    if (!md) { PyErr_NoMemory(); goto done; }
    if (rd_i32(&r) != 793712314 || rd_i32(&r) != 12) { r.err = r.err ? r.err : "not a fastText v12 model"; goto bad; }
    int32_t args[12];
    for (int i = 0; i < 12; i++) args[i] = rd_i32(&r);
    double t;
    rd_get(&r, &t, 8);
    md->dim = args[0]; md->bucket = args[8]; md->minn = args[9]; md->maxn = args[10];
    if (r.err) goto bad;
    if (args[7] != 3 || args[6] != 1 || args[5] > 1) { r.err = "only supervised hierarchical-softmax unigram models"; goto bad; }
    if (md->dim <= 0 || md->dim > 64 || md->bucket <= 0) { r.err = "unsupported dim or bucket"; goto bad; }
    md->size = rd_i32(&r); md->nwords = rd_i32(&r); md->osz = rd_i32(&r);
    rd_i64(&r);
    md->prune_n = rd_i64(&r);
    if (r.err || md->size <= 0 || md->nwords < 0 || md->osz < 2 || md->nwords + md->osz != md->size) { r.err = r.err ? r.err : "bad dictionary"; goto bad; }
    /* entries: NUL-terminated word, int64 count, int8 type */
    size_t start = r.o, total = 0;
    for (int32_t i = 0; i < md->size; i++) {
        const uint8_t *z = memchr(r.p + r.o, 0, r.n - r.o);
        if (!z) { r.err = "truncated dictionary"; goto bad; }
        size_t wl = (size_t)(z - (r.p + r.o));
        total += wl + 1;
        r.o += wl + 1;
        if (r.n - r.o < 9) { r.err = "truncated dictionary"; goto bad; }
        r.o += 9;
    }
    md->blob = PyMem_Malloc(total + 1);
    md->word = PyMem_Calloc((size_t)md->size, sizeof(char *));
    md->word_len = PyMem_Calloc((size_t)md->size, sizeof(int32_t));
    md->word_type = PyMem_Calloc((size_t)md->size, sizeof(int32_t));
    int64_t *counts = NULL;
    if (!md->blob || !md->word || !md->word_len || !md->word_type) { r.err = "out of memory"; goto bad; }
    counts = PyMem_Calloc((size_t)md->osz, sizeof(int64_t));
    if (!counts) { r.err = "out of memory"; goto bad; }
    r.o = start;
    size_t bo = 0;
    int32_t nl = 0;
    for (int32_t i = 0; i < md->size; i++) {
        size_t wl = strlen((const char *)r.p + r.o);
        memcpy(md->blob + bo, r.p + r.o, wl + 1);
        md->word[i] = md->blob + bo;
        md->word_len[i] = (int32_t)wl;
        bo += wl + 1;
        r.o += wl + 1;
        int64_t cnt = rd_i64(&r);
        md->word_type[i] = rd_u8(&r);
        if (md->word_type[i] == 1) {
            if (nl >= md->osz || i < md->nwords) { r.err = "labels out of order"; PyMem_Free(counts); goto bad; }
            counts[nl++] = cnt;
        } else if (md->word_type[i] != 0 || i >= md->nwords) { r.err = "bad entry type"; PyMem_Free(counts); goto bad; }
    }
    if (nl != md->osz) { r.err = "bad label count"; PyMem_Free(counts); goto bad; }
    md->word_cap = pow2_at_least(2 * (uint64_t)md->size);
    md->word_slot = PyMem_Malloc(md->word_cap * sizeof(int32_t));
    if (!md->word_slot) { r.err = "out of memory"; PyMem_Free(counts); goto bad; }
    memset(md->word_slot, 0xff, md->word_cap * sizeof(int32_t));
    for (int32_t i = 0; i < md->size; i++) {
        uint32_t mask = md->word_cap - 1, s = lid_mix(lid_fnv((const uint8_t *)md->word[i], md->word_len[i])) & mask;
        while (md->word_slot[s] >= 0) {
            int32_t e = md->word_slot[s];
            if (md->word_len[e] == md->word_len[i] && memcmp(md->word[e], md->word[i], md->word_len[i]) == 0) {
                r.err = "duplicate dictionary entry"; PyMem_Free(counts); goto bad;
            }
            s = (s + 1) & mask;
        }
        md->word_slot[s] = i;
    }
    if (md->prune_n > 0) {
        if ((uint64_t)md->prune_n > (r.n - r.o) / 8) { r.err = "truncated prune index"; PyMem_Free(counts); goto bad; }
        md->prune_cap = pow2_at_least(2 * (uint64_t)md->prune_n);
        md->prune_key = PyMem_Malloc(md->prune_cap * sizeof(int32_t));
        md->prune_val = PyMem_Malloc(md->prune_cap * sizeof(int32_t));
        if (!md->prune_key || !md->prune_val) { r.err = "out of memory"; PyMem_Free(counts); goto bad; }
        memset(md->prune_key, 0xff, md->prune_cap * sizeof(int32_t));
        for (int64_t i = 0; i < md->prune_n; i++) {
            int32_t k = rd_i32(&r), v = rd_i32(&r);
            if (k < 0) { r.err = "bad prune index"; PyMem_Free(counts); goto bad; }
            uint32_t mask = md->prune_cap - 1, s = lid_mix((uint32_t)k) & mask;
            while (md->prune_key[s] >= 0 && md->prune_key[s] != k) s = (s + 1) & mask;
            md->prune_key[s] = k; /* a repeated key: the library's map keeps the last one too */
            md->prune_val[s] = v;
        }
    }
    if (rd_u8(&r) != 1) { r.err = r.err ? r.err : "only quantized input matrices (.ftz)"; PyMem_Free(counts); goto bad; }
    md->qnorm = rd_u8(&r);
    md->m = rd_i64(&r);
    int64_t ncols = rd_i64(&r);
    int32_t codesize = rd_i32(&r);
    if (r.err || ncols != md->dim || md->m < md->nwords || codesize < 0 || (size_t)codesize > r.n - r.o) {
        r.err = r.err ? r.err : "bad input matrix"; PyMem_Free(counts); goto bad;
    }
    md->codes = PyMem_Malloc((size_t)codesize + 1);
    if (!md->codes) { r.err = "out of memory"; PyMem_Free(counts); goto bad; }
    rd_get(&r, md->codes, (size_t)codesize);
    int32_t pdim = rd_i32(&r);
    md->nsubq = rd_i32(&r); md->dsub = rd_i32(&r); md->lastdsub = rd_i32(&r);
    if (r.err || pdim != md->dim || md->nsubq <= 0 || md->dsub <= 0 || md->lastdsub <= 0 ||
        (int64_t)(md->nsubq - 1) * md->dsub + md->lastdsub != md->dim || (int64_t)codesize != md->m * md->nsubq) {
        r.err = r.err ? r.err : "bad product quantizer"; PyMem_Free(counts); goto bad;
    }
    if (!(md->centroids = rd_floats(&r, (size_t)md->dim * LID_KSUB))) { PyMem_Free(counts); goto bad; }
    if (md->qnorm) {
        md->norm_codes = PyMem_Malloc((size_t)md->m + 1);
        if (!md->norm_codes) { r.err = "out of memory"; PyMem_Free(counts); goto bad; }
        rd_get(&r, md->norm_codes, (size_t)md->m);
        if (rd_i32(&r) != 1 || rd_i32(&r) != 1 || rd_i32(&r) != 1 || rd_i32(&r) != 1) {
            r.err = r.err ? r.err : "bad norm quantizer"; PyMem_Free(counts); goto bad;
        }
        if (!(md->norm_centroids = rd_floats(&r, LID_KSUB))) { PyMem_Free(counts); goto bad; }
    }
    if (rd_u8(&r) != 0) { r.err = r.err ? r.err : "only dense output matrices"; PyMem_Free(counts); goto bad; }
    int64_t orows = rd_i64(&r), ocols = rd_i64(&r);
    if (r.err || orows != md->osz || ocols != md->dim) { r.err = r.err ? r.err : "bad output matrix"; PyMem_Free(counts); goto bad; }
    if (!(md->wo = rd_floats(&r, (size_t)orows * (size_t)ocols))) { PyMem_Free(counts); goto bad; }
    if (r.o != r.n) { r.err = "trailing bytes after the model"; PyMem_Free(counts); goto bad; }
    if (md->prune_n > 0) /* every pruned row must exist in the input matrix */
        for (uint32_t s = 0; s < md->prune_cap; s++)
            if (md->prune_key[s] >= 0 && (md->prune_val[s] < 0 || md->nwords + (int64_t)md->prune_val[s] >= md->m)) {
                r.err = "prune index past the input matrix"; PyMem_Free(counts); goto bad;
            }
    if (md->prune_n < 0 && md->nwords + (int64_t)md->bucket > md->m) { r.err = "bucket past the input matrix"; PyMem_Free(counts); goto bad; }
    /* the library's buildTree over the label counts */
    int32_t nn = 2 * md->osz - 1;
    md->left = PyMem_Malloc((size_t)nn * sizeof(int32_t));
    md->right = PyMem_Malloc((size_t)nn * sizeof(int32_t));
    int64_t *tc = PyMem_Malloc((size_t)nn * sizeof(int64_t));
    if (!md->left || !md->right || !tc) { PyMem_Free(tc); PyMem_Free(counts); r.err = "out of memory"; goto bad; }
    for (int32_t i = 0; i < nn; i++) { md->left[i] = md->right[i] = -1; tc[i] = (int64_t)1e15; }
    for (int32_t i = 0; i < md->osz; i++) tc[i] = counts[i];
    PyMem_Free(counts);
    int32_t leaf = md->osz - 1, node = md->osz;
    for (int32_t i = md->osz; i < nn; i++) {
        int32_t mini[2] = {0, 0};
        for (int j = 0; j < 2; j++) {
            if (leaf >= 0 && tc[leaf] < tc[node]) mini[j] = leaf--;
            else mini[j] = node++;
        }
        md->left[i] = mini[0];
        md->right[i] = mini[1];
        tc[i] = tc[mini[0]] + tc[mini[1]];
    }
    PyMem_Free(tc);
    /* labels, and each entry's subwords: [id] then the n-grams of "<word>" (none for "</s>") */
    md->label = PyMem_Calloc((size_t)md->osz, sizeof(PyObject *));
    md->sub = PyMem_Calloc((size_t)md->size, sizeof(int32_t *));
    md->nsub = PyMem_Calloc((size_t)md->size, sizeof(int32_t));
    if (!md->label || !md->sub || !md->nsub) { r.err = "out of memory"; goto bad; }
    for (int32_t i = 0; i < md->osz; i++) {
        const char *w = md->word[md->nwords + i];
        int32_t wl = md->word_len[md->nwords + i];
        if (wl < 9 || memcmp(w, "__label__", 9) != 0) { r.err = "label without __label__"; goto bad; }
        md->label[i] = PyUnicode_DecodeUTF8(w + 9, wl - 9, "replace");
        if (!md->label[i]) goto fail;
    }
    for (int32_t i = 0; i < md->size; i++) {
        int32_t *v = NULL;
        Py_ssize_t n = 0, cap = 0;
        v = PyMem_Malloc(64 * sizeof(int32_t));
        if (!v) goto nomem;
        cap = 64;
        v[n++] = i;
        if (!(md->word_len[i] == 4 && memcmp(md->word[i], "</s>", 4) == 0) &&
            lid_subwords(md, (const uint8_t *)md->word[i], md->word_len[i], &v, &n, &cap) < 0) { PyMem_Free(v); goto nomem; }
        md->sub[i] = v;
        md->nsub[i] = (int32_t)n;
    }
    res = PyCapsule_New(md, "crawlpairs.lid_model", lid_capsule_free);
    if (!res) goto fail;
    goto done;
nomem:
    PyErr_NoMemory();
    goto fail;
bad:
    PyErr_SetString(PyExc_ValueError, r.err ? r.err : "unsupported model");
fail:
    lid_model_free(md);
done:
    PyBuffer_Release(&b);
    return res;
}

/* ---------------------------------------------------------------- language ID's loop */

/* langid.predict's per-text loop: for each distinct text, `predict(line, 1, 0.0, "replace")`
 * on its first max_chars characters (newlines as spaces) plus "\n", the label without
 * "__label__" and min(prob, 1) into scores[i]; an empty text or no prediction: None, 0. */
static PyObject *hot_lid(PyObject *self, PyObject *args) {
    PyObject *texts, *predict, *model = Py_None;
    Py_ssize_t max_chars;
    Py_buffer sc;
    if (!PyArg_ParseTuple(args, "O!Onw*|O", &PyList_Type, &texts, &predict, &max_chars, &sc, &model)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(texts);
    PyObject *out = NULL, *k1 = NULL, *thr = NULL, *mode = NULL, *nl = NULL, *sp = NULL;
    const lid_model *md = NULL;
    char *buf = NULL;
    Py_ssize_t bufcap = 0;
    if (sc.len < n * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "lid: scores buffer too small");
        goto done;
    }
    if (model != Py_None && !(md = PyCapsule_GetPointer(model, "crawlpairs.lid_model"))) goto done;
    float *scores = sc.buf;
    if (!(out = PyList_New(n)) || !(k1 = PyLong_FromLong(1)) || !(thr = PyFloat_FromDouble(0.0)) ||
        !(mode = PyUnicode_FromString("replace")) || !(nl = PyUnicode_FromString("\n")) ||
        !(sp = PyUnicode_FromString(" ")))
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(texts, i);
        scores[i] = 0.0f;
        if (!PyUnicode_Check(t)) { PyErr_SetString(PyExc_TypeError, "lid: texts must be str"); goto fail; }
        Py_ssize_t len = PyUnicode_GET_LENGTH(t);
        if (len == 0) { Py_INCREF(Py_None); PyList_SET_ITEM(out, i, Py_None); continue; }
        PyObject *cut = PyUnicode_Substring(t, 0, len < max_chars ? len : max_chars);
        if (!cut) goto fail;
        if (md) { /* the compiled predictor on the UTF-8 bytes, newlines as spaces, plus "\n" */
            Py_ssize_t bn;
            const char *u = PyUnicode_AsUTF8AndSize(cut, &bn);
            if (u) {
                if (bn + 1 > bufcap) {
                    char *nb = PyMem_Realloc(buf, (size_t)(bn + 1) * 2);
                    if (!nb) { Py_DECREF(cut); PyErr_NoMemory(); goto fail; }
                    buf = nb;
                    bufcap = (bn + 1) * 2;
                }
                for (Py_ssize_t j = 0; j < bn; j++) buf[j] = u[j] == '\n' ? ' ' : u[j];
                buf[bn] = '\n';
                int32_t li = -1;
                float prob = 0.0f;
                int got = lid_predict(md, (const uint8_t *)buf, (size_t)bn + 1, &li, &prob);
                Py_DECREF(cut);
                if (got < 0) { PyErr_NoMemory(); goto fail; }
                PyObject *label = Py_None;
                if (got) {
                    label = md->label[li];
                    scores[i] = prob < 1.0f ? prob : 1.0f;
                }
                Py_INCREF(label);
                PyList_SET_ITEM(out, i, label);
                continue;
            }
            PyErr_Clear(); /* not encodable (a lone surrogate): the library's call, and its error */
        }
        if (PyUnicode_FindChar(cut, '\n', 0, PyUnicode_GET_LENGTH(cut), 1) >= 0) {
            PyObject *r = PyUnicode_Replace(cut, nl, sp, -1);
            Py_DECREF(cut);
            if (!(cut = r)) goto fail;
        }
        PyObject *line = PyUnicode_Concat(cut, nl);
        Py_DECREF(cut);
        if (!line) goto fail;
        PyObject *cargs[4] = {line, k1, thr, mode};
        PyObject *pred = PyObject_Vectorcall(predict, cargs, 4, NULL);
        Py_DECREF(line);
        if (!pred) goto fail;
        PyObject *label = Py_None;
        Py_INCREF(Py_None);
        if (PySequence_Check(pred) && PySequence_Size(pred) > 0) {
            PyObject *first = PySequence_GetItem(pred, 0);
            PyObject *prob_o = first ? PySequence_GetItem(first, 0) : NULL;
            PyObject *lab = first ? PySequence_GetItem(first, 1) : NULL;
            Py_XDECREF(first);
            double prob = prob_o ? PyFloat_AsDouble(prob_o) : -1.0;
            Py_XDECREF(prob_o);
            if (!lab || PyErr_Occurred() || !PyUnicode_Check(lab)) {
                Py_XDECREF(lab);
                Py_DECREF(pred);
                Py_DECREF(label);
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "lid: unexpected prediction");
                goto fail;
            }
            Py_DECREF(label);
            label = PyUnicode_Substring(lab, 9, PyUnicode_GET_LENGTH(lab));
            Py_DECREF(lab);
            if (!label) { Py_DECREF(pred); goto fail; }
            scores[i] = (float)(prob < 1.0 ? prob : 1.0);
        }
        Py_DECREF(pred);
        PyList_SET_ITEM(out, i, label);
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(k1);
    Py_XDECREF(thr);
    Py_XDECREF(mode);
    Py_XDECREF(nl);
    Py_XDECREF(sp);
    PyMem_Free(buf);
    PyBuffer_Release(&sc);
    return out;
}

/* ---------------------------------------------------------------- the batch's row columns */

/* Columns: the five per-row string columns of a batch (uid, url, text, text_source,
 * image_domain) as Arrow's string layout (int32 offsets + UTF-8 bytes), filled by wat_links
 * without a Python object per row, and by `extend` with the rows of the Python page loop.
 * `take` hands them over as bytes for pyarrow.Array.from_buffers and starts a new batch. */
#define NCOL 5
typedef struct {
    PyObject_HEAD
    Py_ssize_t n, cap;
    int32_t *off[NCOL];
    buf_t dat[NCOL];
} Cols;

static void cols_dealloc(Cols *c) {
    for (int k = 0; k < NCOL; k++) { PyMem_Free(c->off[k]); PyMem_Free(c->dat[k].p); }
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *cols_new(PyTypeObject *t, PyObject *args, PyObject *kw) {
    Cols *c = (Cols *)t->tp_alloc(t, 0);
    if (!c) return NULL;
    c->cap = 1024;
    for (int k = 0; k < NCOL; k++) {
        if (!(c->off[k] = PyMem_Malloc(sizeof(int32_t) * (c->cap + 1)))) { Py_DECREF(c); return PyErr_NoMemory(); }
        c->off[k][0] = 0;
    }
    return (PyObject *)c;
}

/* room for one more row */
static int cols_room(Cols *c) {
    if (c->n < c->cap) return 0;
    Py_ssize_t cap = c->cap * 2;
    for (int k = 0; k < NCOL; k++) {
        int32_t *o = PyMem_Realloc(c->off[k], sizeof(int32_t) * (cap + 1));
        if (!o) { PyErr_NoMemory(); return -1; }
        c->off[k] = o;
    }
    c->cap = cap;
    return 0;
}

/* column k of the row being written (row c->n; the row counts once cols_done runs) */
static int cols_put(Cols *c, int k, const char *s, Py_ssize_t len) {
    buf_t *b = &c->dat[k];
    if (b->n + len > INT32_MAX) { PyErr_SetString(PyExc_OverflowError, "Columns: a batch over 2 GiB"); return -1; }
    if (buf_reserve(b, len) < 0) return -1;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    c->off[k][c->n + 1] = (int32_t)b->n;
    return 0;
}

/* UTF-8 of a str (as pyarrow writes it: a lone surrogate is an error, as it is there) */
static int cols_put_str(Cols *c, int k, PyObject *u) {
    if (!PyUnicode_Check(u)) { PyErr_SetString(PyExc_TypeError, "Columns: str values"); return -1; }
    Py_ssize_t len;
    const char *s = PyUnicode_IS_ASCII(u) ? (const char *)PyUnicode_1BYTE_DATA(u) : PyUnicode_AsUTF8AndSize(u, &len);
    if (!s) return -1;
    if (PyUnicode_IS_ASCII(u)) len = PyUnicode_GET_LENGTH(u);
    return cols_put(c, k, s, len);
}

static Py_ssize_t cols_len(Cols *c) { return c->n; }

/* extend(uids, urls, texts, sources, domains): rows of the Python page loop, in order */
static PyObject *cols_extend(Cols *c, PyObject *args) {
    PyObject *l[NCOL];
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!", &PyList_Type, &l[0], &PyList_Type, &l[1], &PyList_Type, &l[2],
                          &PyList_Type, &l[3], &PyList_Type, &l[4]))
        return NULL;
    Py_ssize_t m = PyList_GET_SIZE(l[0]);
    for (int k = 1; k < NCOL; k++)
        if (PyList_GET_SIZE(l[k]) != m) { PyErr_SetString(PyExc_ValueError, "Columns.extend: lists differ in length"); return NULL; }
    for (Py_ssize_t i = 0; i < m; i++) {
        if (cols_room(c) < 0) return NULL;
        for (int k = 0; k < NCOL; k++)
            if (cols_put_str(c, k, PyList_GET_ITEM(l[k], i)) < 0) return NULL;
        c->n++;
    }
    Py_RETURN_NONE;
}

/* take() -> [(offsets bytes, data bytes)] * 5 for the rows so far; the columns start empty */
static PyObject *cols_take(Cols *c, PyObject *unused) {
    PyObject *out = PyList_New(NCOL);
    if (!out) return NULL;
    for (int k = 0; k < NCOL; k++) {
        PyObject *t = Py_BuildValue("(y#y#)", (const char *)c->off[k], (Py_ssize_t)(sizeof(int32_t) * (c->n + 1)),
                                    c->dat[k].p ? c->dat[k].p : "", c->dat[k].n);
        if (!t) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, k, t);
    }
    c->n = 0;
    for (int k = 0; k < NCOL; k++) c->dat[k].n = 0;
    return out;
}

static PyMethodDef cols_methods[] = {
    {"extend", (PyCFunction)cols_extend, METH_VARARGS, "extend(uids, urls, texts, sources, domains)"},
    {"take", (PyCFunction)cols_take, METH_NOARGS, "take() -> [(int32 offsets, UTF-8 data)] * 5; empties the columns"},
    {NULL, NULL, 0, NULL}};

static PySequenceMethods cols_seq = {.sq_length = (lenfunc)cols_len};

static PyTypeObject ColsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "crawlpairs.udfs.extract._hotloop.Columns",
    .tp_basicsize = sizeof(Cols),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "uid, url, text, text_source, image_domain of a batch, in Arrow's string layout",
    .tp_new = cols_new,
    .tp_dealloc = (destructor)cols_dealloc,
    .tp_methods = cols_methods,
    .tp_as_sequence = &cols_seq,
};

/* UidSet: the uids a file has written so far (extract's per-file exact dedup: the first
 * (url, text) in file order survives). keep(offsets, data, first, n) -> bytes, 1 where the
 * uid of row i (Arrow string layout, rows first .. first + n of the buffers) is new (and
 * is then added), 0 where it was seen before; a uid must be 32 bytes (ValueError if not). */
typedef struct {
    PyObject_HEAD
    kset keys;
} UidSet;

static void uidset_dealloc(UidSet *u) {
    kset_free(&u->keys);
    Py_TYPE(u)->tp_free((PyObject *)u);
}

static PyObject *uidset_keep(UidSet *u, PyObject *args) {
    Py_buffer ob, db;
    Py_ssize_t first, n;
    if (!PyArg_ParseTuple(args, "y*y*nn", &ob, &db, &first, &n)) return NULL;
    PyObject *mask = NULL;
    if (first < 0 || n < 0 || ob.len < (Py_ssize_t)sizeof(int32_t) * (first + n + 1)) {
        PyErr_SetString(PyExc_ValueError, "UidSet.keep: offsets too short");
        goto done;
    }
    const int32_t *off = (const int32_t *)ob.buf + first;
    if (!(mask = PyBytes_FromStringAndSize(NULL, n))) goto done;
    char *m = PyBytes_AS_STRING(mask);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (off[i + 1] - off[i] != 32 || off[i] < 0 || off[i + 1] > db.len) {
            PyErr_SetString(PyExc_ValueError, "UidSet.keep: a uid is not 32 bytes");
            Py_CLEAR(mask);
            goto done;
        }
        int r = kset_add(&u->keys, (const uint8_t *)db.buf + off[i]);
        if (r < 0) { Py_CLEAR(mask); goto done; }
        m[i] = (char)r;
    }
done:
    PyBuffer_Release(&ob);
    PyBuffer_Release(&db);
    return mask;
}

static Py_ssize_t uidset_len(UidSet *u) { return (Py_ssize_t)u->keys.n; }

static PyMethodDef uidset_methods[] = {
    {"keep", (PyCFunction)uidset_keep, METH_VARARGS,
     "keep(offsets, data, first, n) -> bytes: 1 for a uid not seen before (now added), 0 for a repeat"},
    {NULL, NULL, 0, NULL}};

static PySequenceMethods uidset_seq = {.sq_length = (lenfunc)uidset_len};

static PyTypeObject UidSetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "crawlpairs.udfs.extract._hotloop.UidSet",
    .tp_basicsize = sizeof(UidSet),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "the uids of a file so far (32-byte strings), for extract's per-file dedup",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)uidset_dealloc,
    .tp_methods = uidset_methods,
    .tp_as_sequence = &uidset_seq,
};

/* lid_column(offsets, data, n, model, max_chars, scores float32[n], labels int32[n]): langid.predict
 * for the compiled predictor over a text column: each distinct text predicted once (a hash
 * table on its bytes), the first max_chars characters, newlines as spaces, plus "\n";
 * label -1 (None) and score 0 for empty text or no prediction; scores capped at 1. */
static PyObject *hot_lid_column(PyObject *self, PyObject *args) {
    Py_buffer ob, db, sb, lb;
    Py_ssize_t n, max_chars;
    PyObject *model;
    if (!PyArg_ParseTuple(args, "y*y*nOnw*w*", &ob, &db, &n, &model, &max_chars, &sb, &lb)) return NULL;
    PyObject *res = NULL;
    int32_t *slot_row = NULL;
    uint64_t *slot_h = NULL;
    char *line = NULL;
    const lid_model *md = PyCapsule_GetPointer(model, "crawlpairs.lid_model");
    if (!md) goto done;
    if (ob.len < (Py_ssize_t)sizeof(int32_t) * (n + 1) || sb.len < (Py_ssize_t)sizeof(float) * n ||
        lb.len < (Py_ssize_t)sizeof(int32_t) * n) {
        PyErr_SetString(PyExc_ValueError, "lid_column: buffers too small");
        goto done;
    }
    const int32_t *off = ob.buf;
    const uint8_t *data = db.buf;
    float *scores = sb.buf;
    int32_t *labels = lb.buf;
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap <<= 1;
    slot_row = PyMem_Malloc(cap * sizeof(int32_t));
    slot_h = PyMem_Malloc(cap * sizeof(uint64_t));
    if (!slot_row || !slot_h) { PyErr_NoMemory(); goto done; }
    for (size_t i = 0; i < cap; i++) slot_row[i] = -1;
    Py_ssize_t linecap = 0;
    for (Py_ssize_t r = 0; r < n; r++) {
        int32_t a = off[r], b = off[r + 1];
        if (a < 0 || b < a || b > db.len) { PyErr_SetString(PyExc_ValueError, "lid_column: bad offsets"); goto done; }
        const uint8_t *t = data + a;
        size_t len = (size_t)(b - a);
        scores[r] = 0.0f;
        labels[r] = -1;
        if (len == 0) continue;
        uint64_t h = hash_bytes(t, len);
        size_t i = (size_t)h & (cap - 1);
        int32_t seen = -1;
        while (slot_row[i] >= 0) {
            int32_t q = slot_row[i];
            if (slot_h[i] == h && off[q + 1] - off[q] == (int32_t)len && memcmp(data + off[q], t, len) == 0) {
                seen = q;
                break;
            }
            i = (i + 1) & (cap - 1);
        }
        if (seen >= 0) { scores[r] = scores[seen]; labels[r] = labels[seen]; continue; }
        slot_row[i] = (int32_t)r;
        slot_h[i] = h;
        /* the first max_chars characters (code points of valid UTF-8) */
        size_t cut = 0;
        Py_ssize_t chars = 0;
        while (cut < len && chars < max_chars) {
            cut++;
            while (cut < len && (t[cut] & 0xC0) == 0x80) cut++;
            chars++;
        }
        if ((Py_ssize_t)cut + 1 > linecap) {
            char *nl = PyMem_Realloc(line, (cut + 1) * 2);
            if (!nl) { PyErr_NoMemory(); goto done; }
            line = nl;
            linecap = (Py_ssize_t)(cut + 1) * 2;
        }
        for (size_t j = 0; j < cut; j++) line[j] = t[j] == '\n' ? ' ' : (char)t[j];
        line[cut] = '\n';
        int32_t li = -1;
        float prob = 0.0f;
        int got = lid_predict(md, (const uint8_t *)line, cut + 1, &li, &prob);
        if (got < 0) { PyErr_NoMemory(); goto done; }
        if (got) {
            labels[r] = li;
            scores[r] = prob < 1.0f ? prob : 1.0f;
        }
    }
    res = Py_NewRef(Py_None);
done:
    PyMem_Free(slot_row);
    PyMem_Free(slot_h);
    PyMem_Free(line);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&db);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&lb);
    return res;
}

/* lid_labels(model) -> the model's language codes, by label index */
static PyObject *hot_lid_labels(PyObject *self, PyObject *model) {
    const lid_model *md = PyCapsule_GetPointer(model, "crawlpairs.lid_model");
    if (!md) return NULL;
    PyObject *out = PyList_New(md->osz);
    if (!out) return NULL;
    for (int32_t i = 0; i < md->osz; i++) PyList_SET_ITEM(out, i, Py_NewRef(md->label[i]));
    return out;
}

/* ---------------------------------------------------------------- the page */

static PyObject *hot_wat_links(PyObject *self, PyObject *args) {
    Py_buffer pl;
    int with_title;
    PyObject *origin_o, *dir_o, *cfgt, *judge, *pick, *drops;
    Cols *cols;
    if (!PyArg_ParseTuple(args, "y*pOOO!OOO!O!", &pl, &with_title, &origin_o, &dir_o, &PyTuple_Type, &cfgt, &judge,
                          &pick, &ColsType, &cols, &PyDict_Type, &drops))
        return NULL;
    cfg_t cfg;
    PyObject *result = NULL;
    buf_t arena = {0}, ubuf = {0}, tbuf = {0};
    link_t *links = NULL;
    Py_ssize_t nlinks = 0, caplinks = 0;
    kset seen = {0};
    tally_t tally = {.k = 0};

    if (!PyArg_ParseTuple(cfgt, "O!O!nnnnnnp", &PyTuple_Type, &cfg.schemes, &PyTuple_Type, &cfg.exts, &cfg.max_url,
                          &cfg.max_dom, &cfg.min_len, &cfg.max_len, &cfg.max_raw, &cfg.max_links, &cfg.dedup))
        goto done;
    const char *origin = NULL, *dir = NULL;
    Py_ssize_t olen = 0, dlen = 0;
    if (origin_o != Py_None) {
        origin = PyBytes_AsString(origin_o);
        dir = PyBytes_AsString(dir_o);
        if (!origin || !dir) goto done;
        olen = PyBytes_GET_SIZE(origin_o);
        dlen = PyBytes_GET_SIZE(dir_o);
    }

    /* phase 1: every IMG@/src link object, validated before any row is written */
    const char *P = pl.buf;
    Py_ssize_t N = pl.len;
    static const char IMG_SRC[] = "\"IMG@/src\"";
    const char *hit = find2(P, N, IMG_SRC, 10, 3, 4);
    while (hit) {
        Py_ssize_t i = hit - P;
        const char *start = NULL, *end = memchr(hit, '}', N - i);
        for (Py_ssize_t j = i - 1; j >= 0; j--) /* (memrchr is a GNU extension) */
            if (P[j] == '{') { start = P + j; break; }
        if (!start || !end || i == 0 || P[i - 1] == '\\') { result = Py_NewRef(Py_None); goto done; }
        if (nlinks == caplinks) {
            caplinks = caplinks ? caplinks * 2 : 64;
            link_t *nl = PyMem_Realloc(links, caplinks * sizeof *links);
            if (!nl) { PyErr_NoMemory(); goto done; }
            links = nl;
        }
        int r = parse_link(start, end, &arena, &links[nlinks]);
        if (r == FAIL) goto done;
        if (r == UNSUPPORTED) { result = Py_NewRef(Py_None); goto done; }
        if (links[nlinks].url.present) nlinks++;
        hit = find2(end, N - (end - P), IMG_SRC, 10, 3, 4);
    }

    /* phase 2: the per-link loop of _Builder.add_page; a row's five values are (pointer,
     * length) views of our buffers or of the str the Python callables return (held in own[]) */
    Py_ssize_t todo = nlinks < cfg.max_links ? nlinks : cfg.max_links, kept = 0;
    for (Py_ssize_t li = 0; li < todo; li++) {
        link_t *L = &links[li];
        int alt_ok = usable(&arena, &L->alt);
        int title_ok = with_title ? usable(&arena, &L->title) : 0;
        if (alt_ok < 0 || title_ok < 0) goto done;
        if (!alt_ok && !title_ok) {
            if (tally_add(&tally, drops, "empty_text") < 0) goto done;
            continue;
        }
        PyObject *own[2] = {NULL, NULL}; /* judge's and pick's answers, while their strs are in use */
        const char *url, *dom, *text, *src;
        Py_ssize_t url_n, dom_n, text_n, src_n;
        Py_ssize_t host, hostlen;
        const char *reason = NULL;
        /* URL */
        int j = judge_fast(&cfg, arena.p + L->url.off, L->url.len, origin, olen, dir, dlen, &ubuf, &host, &hostlen,
                           &reason);
        if (j < 0) goto done;
        if (j == J_DROP) {
            if (tally_add(&tally, drops, reason) < 0) goto done;
            continue;
        }
        if (j == J_URL) {
            url = ubuf.p; url_n = ubuf.n; dom = ubuf.p + host; dom_n = hostlen;
        } else {
            PyObject *href = str_of(&arena, &L->url);
            if (!href) goto done;
            PyObject *v = PyObject_CallOneArg(judge, href);
            Py_DECREF(href);
            if (!v) goto done;
            if (!PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 3) {
                Py_DECREF(v);
                PyErr_SetString(PyExc_TypeError, "judge must return (url, reason, domain)");
                goto done;
            }
            PyObject *r = PyTuple_GET_ITEM(v, 1);
            if (r != Py_None) {
                int e = count_drop(drops, r);
                Py_DECREF(v);
                if (e < 0) goto done;
                continue;
            }
            own[0] = v;
            if (!(url = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(v, 0), &url_n)) ||
                !(dom = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(v, 2), &dom_n))) { Py_DECREF(v); goto done; }
        }
        /* text */
        jstr *alt = &L->alt;
        int fast_text = alt_ok && alt->ascii;
        if (fast_text) {
            const unsigned char *a = (const unsigned char *)arena.p + alt->off;
            for (Py_ssize_t i = 0; i < alt->len; i++)
                if (a[i] < 0x20 || a[i] == 0x7f || a[i] == '&') { fast_text = 0; break; }
        }
        if (fast_text) {
            if (alt->len > cfg.max_raw) {
                reason = "text_too_long";
            } else {
                /* " ".join(alt.split()) for printable ASCII: collapse runs of spaces */
                const char *a = arena.p + alt->off;
                if (buf_reserve(&tbuf, alt->len) < 0) { Py_XDECREF(own[0]); goto done; }
                char *o = tbuf.p;
                Py_ssize_t m = 0;
                for (Py_ssize_t i = 0; i < alt->len; i++) {
                    if (a[i] == ' ') {
                        if (m && o[m - 1] != ' ') o[m++] = ' ';
                    } else o[m++] = a[i];
                }
                if (m && o[m - 1] == ' ') m--;
                if (m < cfg.min_len) reason = "text_too_short";
                else if (m > cfg.max_len) reason = "text_too_long";
                text = o; text_n = m; src = "alt"; src_n = 3;
            }
        } else {
            PyObject *cands = PyList_New(0);
            if (!cands) { Py_XDECREF(own[0]); goto done; }
            int bad = 0;
            for (int c = 0; c < 2 && !bad; c++) {
                if (c == 0 ? !alt_ok : !title_ok) continue;
                PyObject *s = str_of(&arena, c == 0 ? &L->alt : &L->title);
                PyObject *t = s ? PyTuple_Pack(2, s, c == 0 ? S_ALT : S_TITLE) : NULL;
                Py_XDECREF(s);
                if (!t || PyList_Append(cands, t) < 0) bad = 1;
                Py_XDECREF(t);
            }
            PyObject *v = bad ? NULL : PyObject_CallOneArg(pick, cands);
            Py_DECREF(cands);
            if (!v) { Py_XDECREF(own[0]); goto done; }
            if (!PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 3) {
                Py_DECREF(v); Py_XDECREF(own[0]);
                PyErr_SetString(PyExc_TypeError, "pick must return (text, reason, source)");
                goto done;
            }
            PyObject *r = PyTuple_GET_ITEM(v, 1);
            if (r != Py_None) {
                int e = count_drop(drops, r);
                Py_DECREF(v); Py_XDECREF(own[0]);
                if (e < 0) goto done;
                continue;
            }
            own[1] = v;
            if (!(text = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(v, 0), &text_n)) ||
                !(src = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(v, 2), &src_n))) {
                Py_DECREF(v); Py_XDECREF(own[0]);
                goto done;
            }
        }
        if (reason) {
            Py_XDECREF(own[0]); Py_XDECREF(own[1]);
            if (tally_add(&tally, drops, reason) < 0) goto done;
            continue;
        }
        /* dedup and uid: sha256(url "\t" text); a URL never holds a raw tab */
        sha256_ctx h;
        uint8_t d[32];
        sha256_init(&h);
        sha256_update(&h, (const uint8_t *)url, url_n);
        sha256_update(&h, (const uint8_t *)"\t", 1);
        sha256_update(&h, (const uint8_t *)text, text_n);
        sha256_final(&h, d);
        int fresh = cfg.dedup ? kset_add(&seen, d) : 1;
        if (fresh < 0) { Py_XDECREF(own[0]); Py_XDECREF(own[1]); goto done; }
        if (!fresh) {
            Py_XDECREF(own[0]); Py_XDECREF(own[1]);
            if (tally_add(&tally, drops, "duplicate_in_page") < 0) goto done;
            continue;
        }
        static const char HEX[] = "0123456789abcdef";
        char hex[32];
        for (int i = 0; i < 16; i++) { hex[2 * i] = HEX[d[i] >> 4]; hex[2 * i + 1] = HEX[d[i] & 15]; }
        int e = cols_room(cols) < 0 || cols_put(cols, 0, hex, 32) < 0 || cols_put(cols, 1, url, url_n) < 0 ||
                cols_put(cols, 2, text, text_n) < 0 || cols_put(cols, 3, src, src_n) < 0 ||
                cols_put(cols, 4, dom, dom_n) < 0;
        Py_XDECREF(own[0]); Py_XDECREF(own[1]);
        if (e) goto done;
        cols->n++;
        kept++;
    }
    if (tally_flush(&tally, drops) < 0) goto done;
    result = Py_BuildValue("nn", nlinks, kept);
done:
    kset_free(&seen);
    PyMem_Free(arena.p);
    PyMem_Free(ubuf.p);
    PyMem_Free(tbuf.p);
    PyMem_Free(links);
    PyBuffer_Release(&pl);
    return result;
}

static PyObject *hot_sha_uid(PyObject *self, PyObject *args) {
    /* sha256(data) with the compression function in use, or the portable one (tests: both) */
    Py_buffer b;
    int portable = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &b, &portable)) return NULL;
    void (*saved)(sha256_ctx *, const uint8_t *) = sha256_compress;
    if (portable) sha256_compress = sha256_block;
    sha256_ctx h;
    uint8_t d[32];
    sha256_init(&h);
    sha256_update(&h, b.buf, b.len);
    sha256_final(&h, d);
    sha256_compress = saved;
    PyBuffer_Release(&b);
    return PyBytes_FromStringAndSize((const char *)d, 32);
}

static PyObject *hot_set_avx2(PyObject *self, PyObject *arg) {
    /* turn the AVX2 scans off (or back on where the CPU has AVX2); the previous setting. Tests
     * run the SSE2 / portable scans with it. */
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
#ifdef HAVE_SHANI_CODE
    int was = use_avx2;
    use_avx2 = on && cpu_has_avx2();
    return PyBool_FromLong(was);
#else
    return PyBool_FromLong(0);
#endif
}

static PyMethodDef methods[] = {
    {"set_avx2", hot_set_avx2, METH_O, "set_avx2(on) -> whether the AVX2 scans were on (tests)"},
    {"flags", hot_flags, METH_O,
     "(bits, first \"Base\" offset or -1); bits 1: IMG@, 2: \"Base\", 4: creativecommons.org, 8: ends in }"},
    {"wat_links", hot_wat_links, METH_VARARGS,
     "wat_links(payload, with_title, origin, dir, cfg, judge, pick, columns, drops) -> (n_links, kept) | None"},
    {"record", hot_record, METH_VARARGS,
     "record(member, max_record_bytes, max_header_bytes) -> (header, payload view, rtype | None) | None"},
    {"members", hot_members, METH_VARARGS,
     "members(buf, pos, at_eof, decompressobj, max_record_bytes, max_header_bytes, fast_limit, skip_plain, "
     "first_window, fast_input) -> "
     "(records, pos, skipped); a record: (offset in buf, rtype | None, header, payload view, flags, first Base)"},
    {"lid_column", hot_lid_column, METH_VARARGS,
     "lid_column(offsets, data, n, model, max_chars, scores_out, labels_out): the compiled predictor over a text "
     "column, each distinct text once; label -1: None"},
    {"lid_labels", hot_lid_labels, METH_O, "lid_labels(model) -> the language code of each label index"},
    {"lid", hot_lid, METH_VARARGS,
     "lid(distinct_texts, predict, max_chars, float32_scores_out[, model]) -> [language | None] (langid.predict's "
     "loop; with a lid_model capsule the compiled predictor runs instead of `predict`)"},
    {"lid_model", hot_lid_model, METH_O, "lid_model(fasttext_file_bytes) -> capsule; ValueError if not handled here"},
    {"sha256", hot_sha_uid, METH_VARARGS, "sha256(data, portable=False) -> digest (tests)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_hotloop", "WAT per-link loop in C", -1, methods};

PyMODINIT_FUNC PyInit__hotloop(void) {
    init_tables();
    S_ALT = PyUnicode_InternFromString("alt");
    S_TITLE = PyUnicode_InternFromString("title");
    S_DECOMPRESS = PyUnicode_InternFromString("decompress");
    S_EOF = PyUnicode_InternFromString("eof");
    S_UNUSED = PyUnicode_InternFromString("unused_data");
    S_METADATA = PyUnicode_InternFromString("metadata");
    if (!S_ALT || !S_TITLE || !S_DECOMPRESS || !S_EOF || !S_UNUSED || !S_METADATA) return NULL;
    const char *sha = "portable";
#ifdef HAVE_SHANI_CODE
    if (cpu_has_shani()) { sha256_compress = sha256_block_ni; sha = "sha-ni"; }
    use_avx2 = cpu_has_avx2();
#endif
    if (PyType_Ready(&ColsType) < 0 || PyType_Ready(&UidSetType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (m && (PyModule_AddStringConstant(m, "SHA256", sha) < 0 ||
              PyModule_AddObjectRef(m, "Columns", (PyObject *)&ColsType) < 0 ||
              PyModule_AddObjectRef(m, "UidSet", (PyObject *)&UidSetType) < 0))
        Py_CLEAR(m);
    return m;
}

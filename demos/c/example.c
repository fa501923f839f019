/*
 * libkiln from C: load a .kiln artifact, describe its inputs and outputs,
 * run it on one input read from a .npy file (version 1, C order, the
 * model's input dtype, batch 1) and print the outputs as `kiln run --json`
 * does: {"NAME": {"data": [...], "dtype": "...", "shape": [...]}, ...}.
 *
 *   cc -o example demos/c/example.c -Iffi/include target/debug/libkiln.a -lpthread -ldl -lm
 *   ./example model.kiln x.npy
 *
 * Exit status: 0, or the failing call's KilnStatus (the kiln CLI's codes),
 * with kiln_last_error() on stderr.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

/* The whole file, or NULL. */
static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            uint8_t *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        size_t n = fread(buf + *len, 1, cap - *len, f);
        if (n == 0)
            break;
        *len += n;
    }
    fclose(f);
    return buf;
}

static const char *dtype_name(KilnDType t)
{
    switch (t) {
    case KILN_D_TYPE_F32: return "float32";
    case KILN_D_TYPE_U8: return "uint8";
    case KILN_D_TYPE_I8: return "int8";
    case KILN_D_TYPE_U16: return "uint16";
    case KILN_D_TYPE_I16: return "int16";
    case KILN_D_TYPE_I32: return "int32";
    case KILN_D_TYPE_I64: return "int64";
    case KILN_D_TYPE_BOOL: return "bool";
    case KILN_D_TYPE_F16: return "float16";
    case KILN_D_TYPE_F64: return "float64";
    case KILN_D_TYPE_U32: return "uint32";
    case KILN_D_TYPE_U64: return "uint64";
    }
    return "?";
}

/* Prints element i of an output as JSON. */
static void print_value(const KilnOutput *o, size_t i)
{
    const uint8_t *p = o->data;
    switch (o->dtype) {
    case KILN_D_TYPE_F32: {
        float v;
        memcpy(&v, p + 4 * i, 4);
        printf("%.9g", (double)v);
        break;
    }
    case KILN_D_TYPE_F64: {
        double v;
        memcpy(&v, p + 8 * i, 8);
        printf("%.17g", v);
        break;
    }
    case KILN_D_TYPE_I8: printf("%d", (int)(int8_t)p[i]); break;
    case KILN_D_TYPE_U8:
    case KILN_D_TYPE_BOOL: printf("%u", (unsigned)p[i]); break;
    case KILN_D_TYPE_I32: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        printf("%" PRId32, v);
        break;
    }
    case KILN_D_TYPE_I64: {
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        printf("%" PRId64, v);
        break;
    }
    default: printf("null"); break;
    }
}

static size_t dtype_size(KilnDType t)
{
    switch (t) {
    case KILN_D_TYPE_U8: case KILN_D_TYPE_I8: case KILN_D_TYPE_BOOL: return 1;
    case KILN_D_TYPE_U16: case KILN_D_TYPE_I16: case KILN_D_TYPE_F16: return 2;
    case KILN_D_TYPE_F32: case KILN_D_TYPE_I32: case KILN_D_TYPE_U32: return 4;
    default: return 8;
    }
}

static int failed(KilnStatus status, const char *what)
{
    fprintf(stderr, "%s: %s (status %d)\n", what, kiln_last_error(), (int)status);
    return (int)status;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.kiln INPUT.npy\n", argv[0]);
        return 2;
    }
    size_t artifact_len = 0, npy_len = 0;
    uint8_t *artifact = read_file(argv[1], &artifact_len);
    uint8_t *npy = read_file(argv[2], &npy_len);
    if (!artifact || !npy || npy_len < 10 || memcmp(npy, "\x93NUMPY\x01", 7) != 0) {
        fprintf(stderr, "cannot read %s or %s (a version-1 .npy)\n", argv[1], argv[2]);
        free(artifact);
        free(npy);
        return 1;
    }
    size_t header = 10 + (size_t)(npy[8] | npy[9] << 8);

    KilnModel *model = NULL;
    KilnSession *session = NULL;
    int rc = 0;
    KilnStatus st = kiln_model_load(artifact, artifact_len, &model);
    free(artifact); /* the library copied it */
    if (st != KILN_STATUS_OK) {
        rc = failed(st, "kiln_model_load");
        goto done;
    }
    if (kiln_model_input_count(model) != 1) {
        fprintf(stderr, "this example feeds models with one input\n");
        rc = 2;
        goto done;
    }
    KilnTensorInfo in;
    if ((st = kiln_model_input(model, 0, &in)) != KILN_STATUS_OK) {
        rc = failed(st, "kiln_model_input");
        goto done;
    }
    size_t dims[KILN_MAX_RANK];
    for (size_t d = 0; d < in.rank; d++)
        dims[d] = in.dims[d] < 0 ? 1 : (size_t)in.dims[d]; /* batch 1 */
    KilnTensor x = {
        .dtype = in.dtype,
        .rank = in.rank,
        .dims = dims,
        .data = header <= npy_len ? npy + header : npy,
        .byte_len = header <= npy_len ? npy_len - header : 0,
    };
    if ((st = kiln_session_new(model, &session)) != KILN_STATUS_OK) {
        rc = failed(st, "kiln_session_new");
        goto done;
    }
    if ((st = kiln_session_run(session, &x, 1)) != KILN_STATUS_OK) {
        rc = failed(st, "kiln_session_run");
        goto done;
    }
    printf("{");
    for (size_t k = 0; k < kiln_model_output_count(model); k++) {
        KilnTensorInfo info;
        KilnOutput o;
        if ((st = kiln_model_output(model, k, &info)) != KILN_STATUS_OK ||
            (st = kiln_session_output(session, k, &o)) != KILN_STATUS_OK) {
            rc = failed(st, "kiln_session_output");
            goto done;
        }
        printf("%s\"%s\": {\"data\": [", k ? ", " : "", info.name);
        for (size_t i = 0; i < o.byte_len / dtype_size(o.dtype); i++) {
            if (i)
                printf(", ");
            print_value(&o, i);
        }
        printf("], \"dtype\": \"%s\", \"shape\": [", dtype_name(o.dtype));
        for (size_t d = 0; d < o.rank; d++)
            printf("%s%zu", d ? ", " : "", o.dims[d]);
        printf("]}");
    }
    printf("}\n");
done:
    kiln_session_free(session);
    kiln_model_free(model);
    free(npy);
    return rc;
}

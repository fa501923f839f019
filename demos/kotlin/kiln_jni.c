/*
 * JNI shim between demos/kotlin/Kiln.kt (class dev.kiln.Native) and
 * libkiln's C ABI. Every failure throws dev.kiln.KilnException(status,
 * kiln_last_error()).
 *
 * Not built by the test suite (no Android NDK or Kotlin compiler here).
 * Checked once by hand on Linux: built with gcc against the JDK's jni.h and
 * libkiln.a, and driven from Java classes with the same names and
 * signatures (a model loaded, a run, an input rejected with status 4, a
 * bad artifact with status 3, each as a KilnException). With the NDK:
 *   $CC -shared -fPIC -o libkiln_jni.so kiln_jni.c -I../../ffi/include libkiln.a -lm -ldl
 */
#include <jni.h>
#include <stdint.h>
#include <stdlib.h>

#include "kiln.h"

static void throw_message(JNIEnv *env, KilnStatus status, const char *message)
{
    jclass cls = (*env)->FindClass(env, "dev/kiln/KilnException");
    if (!cls)
        return; /* NoClassDefFoundError is pending */
    jmethodID init = (*env)->GetMethodID(env, cls, "<init>", "(ILjava/lang/String;)V");
    jstring msg = (*env)->NewStringUTF(env, message);
    jobject e = init && msg ? (*env)->NewObject(env, cls, init, (jint)status, msg) : NULL;
    if (e)
        (*env)->Throw(env, (jthrowable)e);
}

/* Throws the calling thread's last libkiln failure. */
static void throw_kiln(JNIEnv *env, KilnStatus status)
{
    throw_message(env, status, kiln_last_error());
}

JNIEXPORT jlong JNICALL Java_dev_kiln_Native_loadModel(JNIEnv *env, jclass cls, jbyteArray artifact)
{
    (void)cls;
    jsize len = (*env)->GetArrayLength(env, artifact);
    jbyte *bytes = (*env)->GetByteArrayElements(env, artifact, NULL);
    if (!bytes)
        return 0;
    KilnModel *model = NULL;
    KilnStatus st = kiln_model_load((const uint8_t *)bytes, (size_t)len, &model);
    /* libkiln copied the bytes: release without copying back. */
    (*env)->ReleaseByteArrayElements(env, artifact, bytes, JNI_ABORT);
    if (st != KILN_STATUS_OK) {
        throw_kiln(env, st);
        return 0;
    }
    return (jlong)(intptr_t)model;
}

JNIEXPORT void JNICALL Java_dev_kiln_Native_freeModel(JNIEnv *env, jclass cls, jlong model)
{
    (void)env, (void)cls;
    kiln_model_free((KilnModel *)(intptr_t)model);
}

JNIEXPORT jint JNICALL Java_dev_kiln_Native_inputCount(JNIEnv *env, jclass cls, jlong model)
{
    (void)env, (void)cls;
    return (jint)kiln_model_input_count((const KilnModel *)(intptr_t)model);
}

JNIEXPORT jint JNICALL Java_dev_kiln_Native_outputCount(JNIEnv *env, jclass cls, jlong model)
{
    (void)env, (void)cls;
    return (jint)kiln_model_output_count((const KilnModel *)(intptr_t)model);
}

JNIEXPORT jlong JNICALL Java_dev_kiln_Native_newSession(JNIEnv *env, jclass cls, jlong model)
{
    (void)cls;
    KilnSession *session = NULL;
    KilnStatus st = kiln_session_new((const KilnModel *)(intptr_t)model, &session);
    if (st != KILN_STATUS_OK) {
        throw_kiln(env, st);
        return 0;
    }
    return (jlong)(intptr_t)session;
}

JNIEXPORT void JNICALL Java_dev_kiln_Native_freeSession(JNIEnv *env, jclass cls, jlong session)
{
    (void)env, (void)cls;
    kiln_session_free((KilnSession *)(intptr_t)session);
}

JNIEXPORT jfloatArray JNICALL Java_dev_kiln_Native_runF32(JNIEnv *env, jclass cls, jlong session,
                                                          jfloatArray input, jlongArray shape)
{
    (void)cls;
    jsize rank = (*env)->GetArrayLength(env, shape);
    if (rank > KILN_MAX_RANK) {
        throw_message(env, KILN_STATUS_USAGE, "shape has more than KILN_MAX_RANK dimensions");
        return NULL;
    }
    jlong dims64[KILN_MAX_RANK];
    size_t dims[KILN_MAX_RANK];
    (*env)->GetLongArrayRegion(env, shape, 0, rank, dims64);
    for (jsize d = 0; d < rank; d++)
        dims[d] = dims64[d] < 0 ? 0 : (size_t)dims64[d];
    jsize n = (*env)->GetArrayLength(env, input);
    jfloat *data = (*env)->GetFloatArrayElements(env, input, NULL);
    if (!data)
        return NULL;
    KilnTensor x = {KILN_D_TYPE_F32, (size_t)rank, dims, (const uint8_t *)data,
                    (size_t)n * sizeof(jfloat)};
    KilnStatus st = kiln_session_run((KilnSession *)(intptr_t)session, &x, 1);
    (*env)->ReleaseFloatArrayElements(env, input, data, JNI_ABORT);
    KilnOutput out;
    if (st == KILN_STATUS_OK)
        st = kiln_session_output((const KilnSession *)(intptr_t)session, 0, &out);
    if (st != KILN_STATUS_OK) {
        throw_kiln(env, st);
        return NULL;
    }
    if (out.dtype != KILN_D_TYPE_F32) {
        throw_message(env, KILN_STATUS_USAGE, "output 0 is not float32 (runF32 returns floats)");
        return NULL;
    }
    jsize m = (jsize)(out.byte_len / sizeof(jfloat));
    jfloatArray result = (*env)->NewFloatArray(env, m);
    if (result)
        (*env)->SetFloatArrayRegion(env, result, 0, m, (const jfloat *)out.data);
    return result;
}

// Kiln from Kotlin on Android (or any JVM): classes over libkiln's C ABI
// through the JNI shim in kiln_jni.c (build both into libkiln_jni.so with
// the NDK, linking libkiln.a built for the device's ABI).
//
// NOT BUILT OR RUN HERE: this machine has no Android NDK or Kotlin
// compiler (kiln_jni.c was checked by hand from Java, see there). It shows
// the calls an app makes; the C example (demos/c/example.c) is the tested
// program that makes the same calls.
//
//     KilnModel(assets.open("kws.kiln").readBytes()).use { model ->
//         KilnSession(model).use { session ->
//             val scores = session.run(features, longArrayOf(1, 49, 10, 1))
//         }
//     }
package dev.kiln

/** A failed call: libkiln's status (the kiln CLI's exit codes) and message. */
class KilnException(val status: Int, message: String) : Exception("$message (status $status)")

/** A loaded model: immutable, shareable across threads. Close it (or use `use`). */
class KilnModel(artifact: ByteArray) : AutoCloseable {
    internal var handle: Long = Native.loadModel(artifact)
        private set

    val inputCount: Int get() = Native.inputCount(checkOpen())
    val outputCount: Int get() = Native.outputCount(checkOpen())

    private fun checkOpen(): Long {
        check(handle != 0L) { "the model was closed" }
        return handle
    }

    override fun close() {
        if (handle != 0L) {
            Native.freeModel(handle)
            handle = 0L
        }
    }
}

/** One thread's runs of a model (it keeps the model alive). */
class KilnSession(model: KilnModel) : AutoCloseable {
    private var handle: Long = Native.newSession(model.handle)

    /** Runs a model with one float32 input; returns output 0. Bad input throws. */
    fun run(input: FloatArray, shape: LongArray): FloatArray {
        check(handle != 0L) { "the session was closed" }
        return Native.runF32(handle, input, shape)
    }

    override fun close() {
        if (handle != 0L) {
            Native.freeSession(handle)
            handle = 0L
        }
    }
}

/** The JNI entry points of kiln_jni.c (they throw KilnException). */
internal object Native {
    init {
        System.loadLibrary("kiln_jni")
    }

    external fun loadModel(artifact: ByteArray): Long
    external fun freeModel(model: Long)
    external fun inputCount(model: Long): Int
    external fun outputCount(model: Long): Int
    external fun newSession(model: Long): Long
    external fun freeSession(session: Long)
    external fun runF32(session: Long, input: FloatArray, shape: LongArray): FloatArray
}

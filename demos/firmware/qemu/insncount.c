/*
 * QEMU TCG plugin: counts the guest instructions executed between two
 * addresses, `begin` and `end` (the firmware's bench_begin/bench_end
 * markers). Each time `begin` executes a new window opens; `end` closes
 * it. At exit it prints one line to stderr:
 *     insncount: windows=N w0=COUNT w1=COUNT ...
 * Usage: qemu-system-arm ... -plugin ./libinsncount.so,begin=0xADDR,end=0xADDR
 * With profile=FILE it also writes, for each instruction address below
 * 1 MiB (flash) executed inside a window, one line "ADDR COUNT" to FILE
 * (`cargo xtask firmware --profile` maps them to functions).
 *
 * Written against QEMU's plugin API version 1 (QEMU 7.x, Debian 12), whose
 * header Debian does not ship: the few declarations used are below.
 * Build: gcc -O2 -shared -fPIC -fvisibility=hidden -o libinsncount.so insncount.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* not read here */
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           void (*cb)(qemu_plugin_id_t, struct qemu_plugin_tb *));
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            void (*cb)(unsigned int, void *),
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t, void *),
                                    void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define MAX_WINDOWS 64

static uint64_t begin_pc, end_pc;
static int armed;
static uint64_t current;
static uint64_t windows[MAX_WINDOWS];
static int n_windows;
/* Per-halfword execution counts over flash, when profiling. */
#define PROFILE_SPAN (1u << 20)
static uint64_t *profile;
static const char *profile_path;

/* Runs before every guest instruction (one vCPU: no locking needed). */
static void on_insn(unsigned int vcpu, void *userdata)
{
    uint64_t pc = (uint64_t)(uintptr_t)userdata;
    (void)vcpu;
    if (pc == begin_pc) {
        armed = 1;
        current = 0;
    } else if (pc == end_pc && armed) {
        if (n_windows < MAX_WINDOWS)
            windows[n_windows++] = current;
        armed = 0;
    }
    if (armed) {
        current++;
        if (profile && pc < PROFILE_SPAN)
            profile[pc / 2]++;
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        qemu_plugin_register_vcpu_insn_exec_cb(insn, on_insn, QEMU_PLUGIN_CB_NO_REGS,
                                               (void *)(uintptr_t)pc);
    }
}

static void on_atexit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    fprintf(stderr, "insncount: windows=%d", n_windows);
    for (int i = 0; i < n_windows; i++)
        fprintf(stderr, " w%d=%llu", i, (unsigned long long)windows[i]);
    fputc('\n', stderr);
    if (profile) {
        FILE *f = fopen(profile_path, "w");
        if (!f) {
            fprintf(stderr, "insncount: cannot write %s\n", profile_path);
            return;
        }
        for (uint64_t i = 0; i < PROFILE_SPAN / 2; i++)
            if (profile[i])
                fprintf(f, "0x%llx %llu\n", (unsigned long long)(i * 2), (unsigned long long)profile[i]);
        fclose(f);
    }
}

__attribute__((visibility("default"))) int
qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "begin=", 6) == 0)
            begin_pc = strtoull(argv[i] + 6, NULL, 0);
        else if (strncmp(argv[i], "end=", 4) == 0)
            end_pc = strtoull(argv[i] + 4, NULL, 0);
        else if (strncmp(argv[i], "profile=", 8) == 0)
            profile_path = argv[i] + 8;
    }
    if (profile_path) {
        profile = calloc(PROFILE_SPAN / 2, sizeof *profile);
        if (!profile) {
            fprintf(stderr, "insncount: out of memory for the profile\n");
            return -1;
        }
    }
    if (begin_pc == 0 || end_pc == 0) {
        fprintf(stderr, "insncount: give begin=ADDR,end=ADDR\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_atexit, NULL);
    return 0;
}

// SPDX-License-Identifier: GPL-2.0
//
// edgewatt per-process CPU accounting.
//
// With BTF (tp_btf): CPU time is the scheduler's own runtime accounting, `sched_stat_runtime`,
// which fires on every tick and every switch with the exact nanoseconds the running task just
// used — so a CPU-bound task that is never switched out is still counted as it runs (switch-only
// accounting lags it by its whole time slice). The task comes from the tracepoint's `curr`
// argument through a two-field CO-RE view of task_struct (no vmlinux.h needed). Hardware
// cycles/instructions are read at sched_switch, where the exporter could open perf events (VMs
// often cannot; those fields then stay 0).
//
// Without BTF: the classic sched/sched_switch tracepoint charges the time since the previous
// switch on this CPU to the task switched out (`current` at that point) — coarser, documented.
//
// Charges are kept per thread-group (process) with its cgroup v2 id and comm in an LRU hash the
// exporter reads once per interval.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

// The two task_struct fields we read; CO-RE relocates the offsets against the running kernel.
struct task_struct {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

char LICENSE[] SEC("license") = "GPL";

#define TASK_COMM_LEN 16
#define MAX_PROCESSES 32768

struct proc_stats {
	__u64 cpu_ns;       // on-CPU nanoseconds, cumulative
	__u64 cycles;       // hardware cycles, cumulative (0 without perf events)
	__u64 instructions; // retired instructions, cumulative (0 without perf events)
	__u64 cgroup_id;    // cgroup v2 id (inode number of the cgroup directory)
	__u32 tgid;
	__u32 _pad;
	char comm[TASK_COMM_LEN];
};

struct cpu_state {
	__u64 last_switch_ns;
	__u64 last_cycles;
	__u64 last_instructions;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_PROCESSES);
	__type(key, __u32); // tgid
	__type(value, struct proc_stats);
} proc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_state);
} cpu_state SEC(".maps");

// One perf event fd per CPU, filled by the exporter when the machine offers the counter.
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} cycles SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} instructions SEC(".maps");

static __always_inline __u64 read_counter(void *map)
{
	struct bpf_perf_event_value v = {};
	if (bpf_perf_event_read_value(map, BPF_F_CURRENT_CPU, &v, sizeof(v)) != 0)
		return 0;
	return v.counter;
}

static __always_inline struct proc_stats *stats_of_current(__u32 tgid)
{
	struct proc_stats *s = bpf_map_lookup_elem(&proc_stats, &tgid);
	if (s)
		return s;
	struct proc_stats init = {};
	init.tgid = tgid;
	init.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(init.comm, sizeof(init.comm));
	bpf_map_update_elem(&proc_stats, &tgid, &init, BPF_NOEXIST);
	return bpf_map_lookup_elem(&proc_stats, &tgid);
}

// `charge_time`: the tracepoint fallback charges wall time between switches; with tp_btf the
// time comes from sched_stat_runtime and the switch only carries the hardware counters.
static __always_inline int account_switch(int charge_time)
{
	__u32 zero = 0;
	struct cpu_state *cpu = bpf_map_lookup_elem(&cpu_state, &zero);
	if (!cpu)
		return 0;

	__u64 now = bpf_ktime_get_ns();
	__u64 cyc = read_counter(&cycles);
	__u64 ins = read_counter(&instructions);
	__u64 delta = cpu->last_switch_ns ? now - cpu->last_switch_ns : 0;
	__u64 dcyc = (cyc && cpu->last_cycles && cyc > cpu->last_cycles) ? cyc - cpu->last_cycles : 0;
	__u64 dins = (ins && cpu->last_instructions && ins > cpu->last_instructions) ? ins - cpu->last_instructions : 0;
	cpu->last_switch_ns = now;
	cpu->last_cycles = cyc;
	cpu->last_instructions = ins;

	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == 0 || delta == 0) // idle task, or the first switch seen on this CPU
		return 0;
	if (!charge_time && !dcyc && !dins)
		return 0;

	struct proc_stats *s = stats_of_current(tgid);
	if (!s)
		return 0;
	if (charge_time)
		__sync_fetch_and_add(&s->cpu_ns, delta);
	if (dcyc)
		__sync_fetch_and_add(&s->cycles, dcyc);
	if (dins)
		__sync_fetch_and_add(&s->instructions, dins);
	// A process can move between cgroups (e.g. systemd-run, container exec): keep the latest.
	s->cgroup_id = bpf_get_current_cgroup_id();
	return 0;
}

// With BTF: exact runtime per task from the scheduler (args: task_struct *curr, u64 runtime).
SEC("tp_btf/sched_stat_runtime")
int edgewatt_stat_runtime_btf(__u64 *ctx)
{
	struct task_struct *curr = (struct task_struct *)ctx[0];
	__u64 runtime = ctx[1];
	__u32 tgid = curr->tgid;
	if (tgid == 0 || runtime == 0)
		return 0;
	struct proc_stats *s;
	// Usually `curr` is the task running here; when the scheduler updates another CPU's task
	// the entry must already exist (its cgroup and comm are only readable for `current`).
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == tgid)
		s = stats_of_current(tgid);
	else
		s = bpf_map_lookup_elem(&proc_stats, &tgid);
	if (!s)
		return 0;
	__sync_fetch_and_add(&s->cpu_ns, runtime);
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == tgid)
		s->cgroup_id = bpf_get_current_cgroup_id();
	return 0;
}

// With BTF: hardware counters per switch (time comes from sched_stat_runtime).
SEC("tp_btf/sched_switch")
int edgewatt_sched_switch_btf(void *ctx)
{
	return account_switch(0);
}

// Fallback for kernels without BTF: time between switches.
SEC("tracepoint/sched/sched_switch")
int edgewatt_sched_switch_tp(void *ctx)
{
	return account_switch(1);
}

// SPDX-License-Identifier: GPL-2.0
//
// edgewatt per-process CPU accounting.
//
// With BTF (tp_btf): CPU time is the scheduler's own runtime accounting, `sched_stat_runtime`,
// which fires on every tick and every switch with the exact nanoseconds the running task just
// used — so a CPU-bound task that is never switched out is still counted as it runs (switch-only
// accounting lags it by its whole time slice). The task comes from the tracepoint's `curr`
// argument through a two-field CO-RE view of task_struct (no vmlinux.h needed).
//
// Without BTF: the classic sched/sched_switch tracepoint charges the time since the previous
// switch on this CPU to the task switched out (`current` at that point) — coarser, documented.
//
// Charges are kept per thread-group (process) with its cgroup v2 id and comm in a hash map the
// exporter reads once per interval and deletes exited processes from. The map is a plain hash,
// not an LRU: when it is full a new process is not added and its time is counted in `drops`
// (events and nanoseconds, exported by the exporter and kept unattributed) — an LRU would evict a
// live process's counter without a trace.
//
// sched/sched_process_exec refreshes a process's comm and cgroup when it execs (a container's
// PID 1 first runs as `runc:[2:INIT]`, then execs the entrypoint).

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
	__u64 cgroup_id;    // cgroup v2 id (inode number of the cgroup directory)
	__u32 tgid;
	__u32 _pad;
	char comm[TASK_COMM_LEN];
};

struct cpu_state {
	__u64 last_switch_ns;
};

// Per CPU: what could not be charged because proc_stats was full.
struct drops {
	__u64 events;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drops);
} drops SEC(".maps");

static __always_inline void count_drop(__u64 ns)
{
	__u32 zero = 0;
	struct drops *d = bpf_map_lookup_elem(&drops, &zero);
	if (!d)
		return;
	d->events += 1; // per-CPU: no other writer
	d->ns += ns;
}

// The current process's entry, created on first sight; NULL (and the time counted as dropped)
// when the map is full.
static __always_inline struct proc_stats *stats_of_current(__u32 tgid, __u64 ns)
{
	struct proc_stats *s = bpf_map_lookup_elem(&proc_stats, &tgid);
	if (s)
		return s;
	struct proc_stats init = {};
	init.tgid = tgid;
	init.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(init.comm, sizeof(init.comm));
	bpf_map_update_elem(&proc_stats, &tgid, &init, BPF_NOEXIST);
	// Created here or by another CPU meanwhile (-EEXIST); absent only when the map is full.
	s = bpf_map_lookup_elem(&proc_stats, &tgid);
	if (!s)
		count_drop(ns);
	return s;
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
	int is_current = (__u32)(bpf_get_current_pid_tgid() >> 32) == tgid;
	if (is_current)
		s = stats_of_current(tgid, runtime);
	else
		s = bpf_map_lookup_elem(&proc_stats, &tgid);
	if (!s)
		return 0;
	__sync_fetch_and_add(&s->cpu_ns, runtime);
	// A process can move between cgroups (e.g. systemd-run, container exec): keep the latest.
	if (is_current)
		s->cgroup_id = bpf_get_current_cgroup_id();
	return 0;
}

// Fallback for kernels without BTF: time between switches, charged to the task switched out.
SEC("tracepoint/sched/sched_switch")
int edgewatt_sched_switch_tp(void *ctx)
{
	__u32 zero = 0;
	struct cpu_state *cpu = bpf_map_lookup_elem(&cpu_state, &zero);
	if (!cpu)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 delta = cpu->last_switch_ns ? now - cpu->last_switch_ns : 0;
	cpu->last_switch_ns = now;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == 0 || delta == 0) // idle task, or the first switch seen on this CPU
		return 0;
	struct proc_stats *s = stats_of_current(tgid, delta);
	if (!s)
		return 0;
	__sync_fetch_and_add(&s->cpu_ns, delta);
	s->cgroup_id = bpf_get_current_cgroup_id();
	return 0;
}

// exec: the process is now another program; its name (and possibly cgroup) changed.
SEC("tracepoint/sched/sched_process_exec")
int edgewatt_process_exec(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_stats *s = bpf_map_lookup_elem(&proc_stats, &tgid);
	if (!s)
		return 0; // created with the new name when it first runs
	bpf_get_current_comm(s->comm, sizeof(s->comm));
	s->cgroup_id = bpf_get_current_cgroup_id();
	return 0;
}

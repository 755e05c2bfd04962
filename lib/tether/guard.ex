defmodule Tether.Guard do
  @moduledoc false
  # The refusals made before anything is spawned or adopted: what `Tether.manage/2` may not
  # adopt, which `{:group, pgid}` a child may join, and whether the application runs at all.
  # Facts about other processes come from /proc, read at the time of the call.
  #
  # The native core keeps its own guard on every signal (never kill(-1), kill(0), nor the VM's
  # pid or group); these checks refuse earlier, with a reason the caller can act on.

  @doc false
  # Whether the :tether application runs: its supervisor and the history table exist. Checked
  # before any spawn, so that a stopped application spawns nothing.
  @spec started?() :: boolean
  def started? do
    Process.whereis(Tether.Supervisor) != nil and :ets.whereis(:tether_history) != :undefined
  end

  @doc false
  # Whether `os_pid` may be adopted by manage/2 (with `kill_group` as given).
  @spec check_manage(pos_integer, boolean) :: :ok | {:error, atom}
  def check_manage(1, _kill_group), do: {:error, :init_process}

  def check_manage(os_pid, kill_group) do
    vm = vm_os_pid()

    with {:ok, stat} <- stat(os_pid),
         :ok <- not_a_thread(os_pid),
         :ok <- not_the_vm(os_pid, stat, vm),
         :ok <- not_an_ancestor(os_pid, vm),
         :ok <- not_managed(os_pid) do
      group_check(os_pid, stat, kill_group, vm)
    end
  end

  defp not_a_thread(os_pid) do
    # /proc/TID exists for every thread, but signalling a thread id signals its whole process.
    if Tether.ProcFs.tgid(os_pid) == os_pid, do: :ok, else: {:error, :no_process}
  end

  # The VM, its child helper (erl_child_setup: erts aborts without it) and Tether's watchdog.
  defp not_the_vm(os_pid, stat, vm) do
    cond do
      os_pid == vm -> {:error, :vm_process}
      os_pid == Tether.Native.watchdog_os_pid() -> {:error, :vm_process}
      stat.ppid == vm and stat.comm == "erl_child_setup" -> {:error, :vm_process}
      true -> :ok
    end
  end

  defp not_an_ancestor(os_pid, vm) do
    if os_pid in ancestors(vm), do: {:error, :vm_ancestor}, else: :ok
  end

  defp not_managed(os_pid) do
    case Tether.Native.process_of(os_pid) do
      {:ok, _pid} -> {:error, :already_managed}
      _ -> :ok
    end
  end

  defp group_check(_os_pid, _stat, false, _vm), do: :ok

  defp group_check(os_pid, stat, true, vm) do
    cond do
      stat.pgrp != os_pid -> {:error, :not_group_leader}
      vm_pgid(vm) == os_pid -> {:error, :vm_group}
      true -> :ok
    end
  end

  @doc false
  # Whether a child may join process group `pgid`: only a group that a live child of Tether
  # created, i.e. `pgid` is the os_pid of a child spawned by Tether (not adopted) that leads
  # its own group; never the VM's group. `adopted?` tells a Tether.Process that adopted its OS
  # process (Tether.Process.adopted?/1).
  @spec check_group(:new | :inherit | pos_integer, (pid -> boolean)) :: :ok | {:error, :bad_group}
  def check_group(group, _adopted?) when group in [:new, :inherit], do: :ok

  def check_group(pgid, adopted?) when is_integer(pgid) do
    with false <- pgid == vm_pgid(vm_os_pid()),
         {:ok, pid} <- Tether.Native.process_of(pgid),
         false <- adopted?.(pid),
         {:ok, %{pgrp: ^pgid}} <- stat(pgid) do
      :ok
    else
      _ -> {:error, :bad_group}
    end
  end

  # ── /proc ────────────────────────────────────────────────────────────────────────────────

  defp vm_os_pid, do: String.to_integer(System.pid())

  defp vm_pgid(vm) do
    case stat(vm) do
      {:ok, %{pgrp: pgrp}} -> pgrp
      _ -> nil
    end
  end

  # The VM's parent, its parent, … up to pid 1 (included).
  defp ancestors(pid, acc \\ []) do
    case stat(pid) do
      {:ok, %{ppid: ppid}} when ppid > 0 ->
        if ppid in acc, do: acc, else: ancestors(ppid, [ppid | acc])

      _ ->
        acc
    end
  end

  defp stat(pid), do: Tether.ProcFs.stat(pid)
end

defmodule Tether.ProcFs do
  @moduledoc false
  # What lib/ reads of other processes in /proc, parsed in one place: a process's stat fields,
  # whether it lives, its thread group, the members of a process group. Read at the time of
  # the call; an exited process (a zombie included) is `{:error, :no_process}`.

  @typedoc "The fields of /proc/PID/stat that Tether uses."
  @type stat :: %{comm: binary, ppid: integer, pgrp: integer}

  @doc false
  # The stat fields of `pid`; {:error, :no_process} for a process that does not exist or has
  # exited (a zombie).
  @spec stat(integer) :: {:ok, stat} | {:error, :no_process}
  def stat(pid) do
    with {:ok, stat} <- File.read("/proc/#{pid}/stat"),
         # The command name is in parentheses and may itself contain ") ".
         [_, comm, rest] <- Regex.run(~r/^\d+ \((.*)\) (.*)$/s, stat),
         [state, ppid, pgrp | _] when state not in ["Z", "X"] <- String.split(rest, " ") do
      {:ok, %{comm: comm, ppid: String.to_integer(ppid), pgrp: String.to_integer(pgrp)}}
    else
      _ -> {:error, :no_process}
    end
  end

  @doc false
  # Whether `pid` is alive: present in /proc and not a zombie.
  @spec alive?(integer) :: boolean
  def alive?(pid), do: match?({:ok, _}, stat(pid))

  @doc false
  # The thread group (the process) that thread `tid` belongs to; nil when it is gone.
  @spec tgid(integer) :: integer | nil
  def tgid(tid) do
    with {:ok, status} <- File.read("/proc/#{tid}/status"),
         [_, tgid] <- Regex.run(~r/^Tgid:\s+(\d+)$/m, status) do
      String.to_integer(tgid)
    else
      _ -> nil
    end
  end

  @doc false
  # The live (not zombie) processes of group `pgid` (or of any of the groups `pgids`).
  @spec group_members(pos_integer | [pos_integer]) :: [pos_integer]
  def group_members(pgids) do
    groups = List.wrap(pgids)

    for pid <- pids(),
        {:ok, %{pgrp: pgrp}} <- [stat(pid)],
        pgrp in groups,
        do: pid
  end

  @doc false
  # Every process id in /proc.
  @spec pids() :: [pos_integer]
  def pids do
    for entry <- File.ls!("/proc"), {pid, ""} <- [Integer.parse(entry)], do: pid
  end
end

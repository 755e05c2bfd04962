defmodule Tether.TestCluster.ProcFs do
  @moduledoc false
  # TestCluster's one reader of /proc: whether a stopped node's process group is gone, on the
  # host that ran it (the manager calls it there with `:erpc`). At the merge it becomes a call
  # of `Tether.ProcFs`; nothing else in TestCluster parses /proc.

  @doc "Live pids (not zombies) in the process groups `pgids` (or the one `pgid`), from /proc."
  @spec group_members(pos_integer | [pos_integer]) :: [pos_integer]
  def group_members(pgids) do
    groups = pgids |> List.wrap() |> MapSet.new(&Integer.to_string/1)

    for entry <- File.ls!("/proc"),
        {pid, ""} <- [Integer.parse(entry)],
        {:ok, stat} <- [File.read("/proc/#{entry}/stat")],
        [_, rest] <- [String.split(stat, ") ", parts: 2)],
        [state, _ppid, group | _] <- [String.split(rest, " ", parts: 4)],
        state not in ["Z", "X"],
        MapSet.member?(groups, group),
        do: pid
  end
end

%% How Erlang users call erlexec, run against Tether's `exec` module.
%% Compiled by mix in the test environment (erlc_paths) and run from ExUnit.
-module(exec_usage_tests).
-include_lib("eunit/include/eunit.hrl").

run_and_monitor_test() ->
    {ok, Pid, OsPid} = exec:run("echo hello; exit 1", [monitor, stdout]),
    receive {stdout, OsPid, Data} -> ?assertEqual(<<"hello\n">>, Data)
    after 5000 -> error(no_stdout) end,
    receive {'DOWN', OsPid, process, Pid, Reason} -> ?assertEqual({exit_status, 256}, Reason)
    after 5000 -> error(no_down) end.

sync_test() ->
    ?assertEqual({ok, [{stdout, [<<"a b\n">>]}]}, exec:run(["/bin/echo", "a", "b"], [sync, stdout])),
    ?assertMatch({error, [{exit_status, 768}]}, exec:run("exit 3", [sync])),
    ?assertEqual({status, 3}, exec:status(768)).

env_and_cd_test() ->
    {ok, [{stdout, Out}]} = exec:run("echo $A$B; pwd", [sync, stdout, {cd, "/tmp"},
                                                       {env, ["A=1", {"B", "2"}]}]),
    ?assertEqual(<<"12\n/tmp\n">>, iolist_to_binary(Out)).

stdin_and_eof_test() ->
    {ok, _Pid, OsPid} = exec:run("cat", [stdin, stdout, monitor]),
    ok = exec:send(OsPid, <<"ping">>),
    ok = exec:send(OsPid, eof),
    receive {stdout, OsPid, <<"ping">>} -> ok after 5000 -> error(no_echo) end,
    receive {'DOWN', OsPid, process, _, normal} -> ok after 5000 -> error(no_down) end.

stop_gives_normal_test() ->
    {ok, Pid, OsPid} = exec:run("sleep 100", [monitor]),
    ?assertEqual(OsPid, exec:ospid(Pid)),
    ?assertEqual(Pid, exec:pid(OsPid)),
    ok = exec:stop(Pid),
    receive {'DOWN', OsPid, process, Pid, Reason} -> ?assertEqual(normal, Reason)
    after 5000 -> error(no_down) end,
    ?assertEqual({error, "pid not alive"}, exec:stop(OsPid)).

kill_and_signals_test() ->
    {ok, _, OsPid} = exec:run(["sleep", "100"], [monitor]),
    ok = exec:kill(OsPid, 9),
    receive {'DOWN', OsPid, process, _, Reason} -> ?assertEqual({exit_status, 9}, Reason)
    after 5000 -> error(no_down) end,
    ?assertEqual(sigkill, exec:signal(9)),
    ?assertEqual(15, exec:signal_to_int(sigterm)),
    ?assertEqual({signal, sigkill, false}, exec:status(9)).

link_test() ->
    process_flag(trap_exit, true),
    {ok, Pid, _} = exec:run_link("exit 2", []),
    receive {'EXIT', Pid, Reason} -> ?assertEqual({exit_status, 512}, Reason)
    after 5000 -> error(no_exit) end.

bad_option_test() ->
    ?assertMatch({error, {invalid_option, _}}, exec:run("true", [{no_such_option, 1}])).

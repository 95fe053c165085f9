/**
 * Host test files whose cases branch on whether /dev/kvm runs guests, run again inside L1 where it
 * does (the other branch runs on the host in the ordinary suite).
 */
import "../../integration/run_libkrun_start_test.ts";

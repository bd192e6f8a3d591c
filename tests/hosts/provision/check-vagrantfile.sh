#!/usr/bin/env bash
# Checks the repository's Vagrantfile without Vagrant (which cannot boot machines here):
# loads it with a stand-in for Vagrant's configuration API and checks what it
# configures: 3 managers and 2 workers on 192.168.56.11-15, manager1 primary; each
# provisioned, in order, by install-docker.sh, install-orc.sh and cluster.sh (init on
# manager1, managers then workers join it), every script it names present and every
# inline command valid bash; then runs manager1's trigger against a fake machine: it
# must copy the join tokens and the orc binary to the host's .orc-tokens/, and remove a
# stale binary when the copy fails. CI runs it (after `ruby -c Vagrantfile`).
#
# Usage: check-vagrantfile.sh [VAGRANTFILE (default: the repository's)]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
file=${1:-$repo/Vagrantfile}
[ $# -le 1 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
command -v ruby >/dev/null 2>&1 || { echo "check-vagrantfile: no ruby" >&2; exit 1; }

out=$(ruby - "$file" "$repo" <<'RUBY'
require "fileutils"
require "pathname"
require "tmpdir"

vagrantfile, repo = ARGV
$log = []
$fails = []
def fail!(msg) = $fails << msg

# Records every setting and call on a path of names (config.vm.provision ...); a
# block is run at once with a child recorder, except `ruby`'s (a trigger's code),
# which is kept.
class Rec
  def initialize(path) = @path = path
  def respond_to_missing?(*) = true
  def method_missing(name, *args, **kw, &blk)
    n = name.to_s
    if n.end_with?("=")
      $log << { path: @path + [n.chomp("=")], args: args, kw: {} }
      return args.first
    end
    child = Rec.new(n == "define" ? @path + [n, args.first.to_s] : @path + [n])
    $log << { path: @path + [n], args: args, kw: kw, block: (blk if n == "ruby") }
    blk.call(child) if blk && n != "ruby"
    child
  end
end

module Vagrant
  def self.configure(version)
    raise "Vagrant.configure(#{version.inspect}): expected \"2\"" unless version == "2"
    yield Rec.new(["config"])
  end
end

Dir.chdir(File.dirname(File.expand_path(vagrantfile))) do
  load File.expand_path(vagrantfile)
end

machines = $log.select { |e| e[:path] == %w[config vm define] }
names = machines.map { |e| e[:args].first.to_s }
want = %w[manager1 manager2 manager3 worker1 worker2]
fail!("machines #{names.inspect}, expected #{want.inspect}") unless names == want
primary = machines.select { |e| e[:kw][:primary] }.map { |e| e[:args].first.to_s }
fail!("primary #{primary.inspect}, expected manager1") unless primary == ["manager1"]
box = $log.find { |e| e[:path] == %w[config vm box] }
fail!("no config.vm.box") unless box && !box[:args].first.to_s.empty?

scripts = %w[install-docker.sh install-orc.sh cluster.sh]
want.each_with_index do |name, i|
  mine = $log.select { |e| e[:path][0, 4] == ["config", "vm", "define", name] }
  host = mine.find { |e| e[:path][4..] == %w[vm hostname] }
  fail!("#{name}: hostname #{host && host[:args].inspect}") unless host && host[:args] == [name]
  ip = "192.168.56.#{11 + i}"
  net = mine.find { |e| e[:path][4..] == %w[vm network] }
  unless net && net[:args] == ["private_network"] && net[:kw][:ip] == ip
    fail!("#{name}: network #{net && [net[:args], net[:kw]].inspect}, expected private_network #{ip}")
  end
  provs = mine.select { |e| e[:path][4..] == %w[vm provision] }
  inlines = provs.map { |e| e[:kw][:inline].to_s }
  order = inlines.map { |c| scripts.find { |s| c.include?("/#{s}") } }
  fail!("#{name}: provisioners run #{order.inspect}, expected #{scripts.inspect}") unless order == scripts
  provs.each do |e|
    fail!("#{name}: provisioner #{e[:args].first} is not a privileged shell") unless
      e[:kw][:type] == "shell" && e[:kw][:privileged] == true
  end
  inlines.each do |c|
    c.scan(%r{/vagrant/(\S+?\.sh)\b}).flatten.each do |rel|
      fail!("#{name}: #{rel} is not in the repository") unless File.file?(File.join(repo, rel))
    end
    ok = system("bash", "-n", "-c", c)
    fail!("#{name}: inline command is not valid bash: #{c}") unless ok
  end
  cluster = inlines.last.to_s
  expect = if i.zero?
             %r{cluster\.sh init 192\.168\.56\.11 /vagrant/\.orc-tokens\z}
           else
             role = name.start_with?("manager") ? "manager" : "worker"
             %r{cluster\.sh join #{role} 192\.168\.56\.11 /vagrant/\.orc-tokens\z}
           end
  fail!("#{name}: cluster step #{cluster.inspect} does not match #{expect.inspect}") unless cluster =~ expect
  puts "#{name} #{ip}: #{inlines.map { |c| c.gsub(%r{\S*/provision/}, "") }.join(" | ")}"
end

# manager1's trigger, against a fake machine
trig = $log.select { |e| e[:path][0, 4] == %w[config vm define manager1] && e[:path].last == "ruby" }
fail!("manager1 has #{trig.size} trigger(s) with ruby code, expected 1") unless trig.size == 1
others = $log.select { |e| e[:path].last == "ruby" && e[:path][3] != "manager1" }
fail!("machines other than manager1 have triggers") unless others.empty?
after = $log.find { |e| e[:path][0, 4] == %w[config vm define manager1] && e[:path][4..] == %w[trigger after] }
fail!("manager1's trigger does not run after :up") unless after && Array(after[:args].first).include?(:up)

class FakeUI
  attr_reader :warnings
  def initialize = @warnings = []
  def warn(m) = @warnings << m
  def info(*) = nil
end
class FakeComm
  def initialize(fail_download) = @fail_download = fail_download
  def sudo(cmd, opts = {})
    raise "sudo #{cmd.inspect}: expected error_check: false" unless opts[:error_check] == false
    role = cmd[%r{\Acat /vagrant/\.orc-tokens/(worker|manager)\z}, 1] or raise "unexpected sudo #{cmd.inspect}"
    yield :stdout, "ORC-1-#{"ab" * 32}-#{role}secret\n"
    0
  end
  def download(from, to)
    raise "download #{from}: expected /usr/local/bin/orc" unless from == "/usr/local/bin/orc"
    raise IOError, "scp: connection lost" if @fail_download
    File.write(to, "#!/bin/sh\necho orc 0.0.0\n")
  end
end
FakeMachine = Struct.new(:communicate, :ui)
FakeEnv = Struct.new(:root_path)

if trig.size == 1
  block = trig.first[:block]
  code = lambda do |env, machine|
    block.call(env, machine)
  rescue StandardError => e
    fail!("trigger raised #{e.class}: #{e.message}")
  end
  before = $fails.size
  Dir.mktmpdir do |root|
    env = FakeEnv.new(Pathname.new(root))
    m = FakeMachine.new(FakeComm.new(false), FakeUI.new)
    code.call(env, m)
    dir = File.join(root, ".orc-tokens")
    %w[worker manager].each do |role|
      f = File.join(dir, role)
      if !File.file?(f) || File.read(f) !~ /\AORC-1-\h{64}-#{role}secret\n\z/
        fail!("trigger: #{f} missing or wrong")
      elsif File.stat(f).mode & 0o777 != 0o600
        fail!("trigger: #{f} has mode #{format("%o", File.stat(f).mode & 0o777)}, expected 600")
      end
    end
    bin = File.join(dir, "orc")
    fail!("trigger: no executable #{bin}") unless File.file?(bin) && File.executable?(bin)
    fail!("trigger: warnings #{m.ui.warnings.inspect}") unless m.ui.warnings.empty?
    # a failed copy leaves no stale binary behind: the others then build orc
    m = FakeMachine.new(FakeComm.new(true), FakeUI.new)
    code.call(env, m)
    fail!("trigger: a failed copy left #{bin}") if File.exist?(bin) || File.exist?("#{bin}.new")
    fail!("trigger: a failed copy was not reported") if m.ui.warnings.empty?
    if $fails.size == before
      puts "trigger: tokens (0600) and binary copied to .orc-tokens/; a failed copy removes the binary"
    end
  end
end

if $fails.empty?
  puts "ok"
else
  $fails.each { |f| puts "FAIL: #{f}" }
  exit 1
end
RUBY
) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/check-vagrantfile: /'
exit "$rc"

// The Java peer of hbiss's HDFS client benchmark: the stock Hadoop client (DFSClient through
// FileSystem) on the same cluster, measuring what bench/hdfs measures for hbiss.
//
//   write   Streams N MiB sequentially into a new file (1 MiB writes), close included.
//   read    Reads the file back sequentially (1 MiB reads); its length must be N MiB.
//   hflush  Appends 4 KiB records to a new file, each followed by hflush(); reports the
//           latency of write+hflush (p50, p99, max) after a warm-up.
//
// Each result is one JSON line on stdout, e.g.
//   {"client":"java","op":"write","bytes":1073741824,"seconds":9.1,"mib_per_s":112.5}
//   {"client":"java","op":"hflush","count":2000,"record_bytes":4096,"p50_us":410.0,...}
// Progress and errors go to stderr. Exit 0 on success, 1 on failure, 2 on bad usage.
//
// Build: bench/hdfs/build-java.sh. Run: bench/hdfs/run-java.sh (puts the cluster's conf dir and
// the Hadoop jars on the classpath).

import java.io.IOException;
import java.net.URI;
import java.util.Arrays;
import java.util.Random;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

public final class HdfsBench {
  private static final int MIB = 1 << 20;

  private static void usage(String why) {
    System.err.println("HdfsBench: " + why);
    System.err.println(
        "usage: HdfsBench --uri hdfs://HOST:PORT [--path /bench/java] [--mib 1024]\n"
            + "                 [--ops write,read,hflush] [--hflush-count 2000]\n"
            + "                 [--hflush-warmup 200] [--blocksize BYTES] [--keep]");
    System.exit(2);
  }

  public static void main(String[] args) throws Exception {
    String uri = null;
    String path = "/bench/java";
    long mib = 1024;
    String ops = "write,read,hflush";
    int hflushCount = 2000;
    int hflushWarmup = 200;
    long blocksize = 0;
    boolean keep = false;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (a.equals("--keep")) {
        keep = true;
        continue;
      }
      if (i + 1 >= args.length) usage("missing value after " + a);
      String v = args[++i];
      try {
        switch (a) {
          case "--uri": uri = v; break;
          case "--path": path = v; break;
          case "--mib": mib = Long.parseLong(v); break;
          case "--ops": ops = v; break;
          case "--hflush-count": hflushCount = Integer.parseInt(v); break;
          case "--hflush-warmup": hflushWarmup = Integer.parseInt(v); break;
          case "--blocksize": blocksize = Long.parseLong(v); break;
          default: usage("unknown option " + a);
        }
      } catch (NumberFormatException e) {
        usage("bad number for " + a + ": " + v);
      }
    }
    if (uri == null) usage("--uri is required");
    if (mib <= 0 || hflushCount <= 0 || hflushWarmup < 0) usage("counts must be positive");

    Configuration conf = new Configuration();
    try (FileSystem fs = FileSystem.newInstance(URI.create(uri), conf)) {
      Path data = new Path(path + ".data");
      Path log = new Path(path + ".hflush");
      if (blocksize == 0) blocksize = fs.getDefaultBlockSize(data);
      for (String op : ops.split(",")) {
        switch (op) {
          case "write": write(fs, data, mib, blocksize); break;
          case "read": read(fs, data, mib); break;
          case "hflush": hflush(fs, log, hflushCount, hflushWarmup, blocksize); break;
          default: usage("unknown op " + op);
        }
      }
      if (!keep) {
        fs.delete(data, false);
        fs.delete(log, false);
      }
    } catch (IOException e) {
      System.err.println("HdfsBench: " + e);
      System.exit(1);
    }
  }

  private static void write(FileSystem fs, Path p, long mib, long blocksize) throws IOException {
    // 16 MiB of random bytes, cycled: incompressible, and no generator cost in the timed loop.
    byte[] pool = new byte[16 * MIB];
    new Random(42).nextBytes(pool);
    short replication = fs.getDefaultReplication(p);
    System.err.printf("write: %d MiB to %s (blocksize %d, replication %d)%n", mib, p, blocksize,
        replication);
    long t0 = System.nanoTime();
    try (FSDataOutputStream out = fs.create(p, true, MIB, replication, blocksize)) {
      for (long i = 0; i < mib; i++) {
        out.write(pool, (int) ((i % 16) * MIB), MIB);
      }
    }
    report("write", mib * MIB, System.nanoTime() - t0);
  }

  private static void read(FileSystem fs, Path p, long mib) throws IOException {
    byte[] buf = new byte[MIB];
    long total = 0;
    long t0 = System.nanoTime();
    try (FSDataInputStream in = fs.open(p, MIB)) {
      int n;
      while ((n = in.read(buf, 0, buf.length)) > 0) total += n;
    }
    long ns = System.nanoTime() - t0;
    if (total != mib * MIB) {
      throw new IOException("read " + total + " bytes from " + p + ", expected " + mib * MIB);
    }
    report("read", total, ns);
  }

  private static void hflush(FileSystem fs, Path p, int count, int warmup, long blocksize)
      throws IOException {
    byte[] record = new byte[4096];
    new Random(7).nextBytes(record);
    long[] us = new long[count];
    try (FSDataOutputStream out =
        fs.create(p, true, 4096, fs.getDefaultReplication(p), blocksize)) {
      for (int i = 0; i < warmup + count; i++) {
        long t0 = System.nanoTime();
        out.write(record);
        out.hflush();
        long dt = System.nanoTime() - t0;
        if (i >= warmup) us[i - warmup] = dt / 1000;
      }
    }
    Arrays.sort(us);
    double sum = 0;
    for (long u : us) sum += u;
    System.out.printf(
        "{\"client\":\"java\",\"op\":\"hflush\",\"count\":%d,\"record_bytes\":4096,"
            + "\"p50_us\":%d,\"p99_us\":%d,\"max_us\":%d,\"mean_us\":%.1f}%n",
        count, pct(us, 50), pct(us, 99), us[count - 1], sum / count);
  }

  private static long pct(long[] sorted, int p) {
    int i = (int) Math.ceil(p / 100.0 * sorted.length) - 1;
    return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
  }

  private static void report(String op, long bytes, long ns) {
    double s = ns / 1e9;
    System.out.printf(
        "{\"client\":\"java\",\"op\":\"%s\",\"bytes\":%d,\"seconds\":%.3f,\"mib_per_s\":%.1f}%n",
        op, bytes, s, bytes / (double) MIB / s);
  }
}

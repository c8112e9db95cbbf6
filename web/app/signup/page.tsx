"use client";

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useState, type FormEvent } from "react";
import { Alert, button, Field, Shell } from "@/components/Shell";
import { api, ApiError, useSession } from "@/lib/session";

export default function SignupPage() {
  const { login, t } = useSession();
  const router = useRouter();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const body = { email: f.get("email"), password: f.get("password") };
    setBusy(true);
    setError(null);
    try {
      await api("/api/auth/signup", { body });
      const r = await api<{ access_token: string }>("/api/auth/login", { body });
      login(r.access_token);
      router.replace("/keys/");
    } catch (err) {
      const status = err instanceof ApiError ? err.status : 0;
      // Sign-up answers alike whether or not the email is taken (it reveals no one): a taken email shows as
      // the login after it being refused.
      setError(
        status === 409 || status === 401
          ? t("cannotSignup")
          : status === 429
            ? t("tooMany")
            : `${t("failed")}: ${err instanceof Error ? err.message : ""}`,
      );
    } finally {
      setBusy(false);
    }
  }

  return (
    <Shell auth={false}>
      <div className="mx-auto max-w-sm">
        <h1 className="mb-4 text-2xl font-bold">{t("signup")}</h1>
        <form onSubmit={submit} className="flex flex-col gap-4 rounded-lg bg-white p-5 shadow-sm">
          <Field id="email" label={t("email")} type="email" autoComplete="username" required />
          <Field
            id="password"
            label={t("password")}
            hint={t("passwordHint")}
            type="password"
            autoComplete="new-password"
            minLength={10}
            required
          />
          {error && <Alert kind="error">{error}</Alert>}
          <button type="submit" className={button} disabled={busy}>
            {t("signup")}
          </button>
        </form>
        <p className="mt-4 text-sm">
          {t("haveAccount")}{" "}
          <Link href="/login/" className="text-blue-800 underline">
            {t("login")}
          </Link>
        </p>
      </div>
    </Shell>
  );
}

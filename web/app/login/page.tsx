"use client";

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useEffect, useState, type FormEvent } from "react";
import { Alert, button, Field, Shell } from "@/components/Shell";
import { api, ApiError, useSession } from "@/lib/session";

export default function LoginPage() {
  const { login, logout, t } = useSession();
  const router = useRouter();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [changed, setChanged] = useState(false);

  useEffect(() => {
    // after a password change (settings page): say why the user is here
    const after = new URLSearchParams(window.location.search).get("changed") === "1";
    setChanged(after);
    if (after) logout(); // the old token no longer works
  }, [logout]);

  async function submit(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    setBusy(true);
    setError(null);
    try {
      const r = await api<{ access_token: string }>("/api/auth/login", {
        body: { email: f.get("email"), password: f.get("password") },
      });
      login(r.access_token);
      router.replace("/dashboard/");
    } catch (err) {
      const status = err instanceof ApiError ? err.status : 0;
      setError(status === 429 ? t("tooMany") : status === 401 ? t("wrongLogin") : t("failed"));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Shell auth={false}>
      <div className="mx-auto max-w-sm">
        <h1 className="mb-4 text-2xl font-bold">{t("login")}</h1>
        {changed && (
          <div className="mb-4">
            <Alert kind="ok">{t("passwordChanged")}</Alert>
          </div>
        )}
        <form onSubmit={submit} className="flex flex-col gap-4 rounded-lg bg-white p-5 shadow-sm">
          <Field id="email" label={t("email")} type="email" autoComplete="username" required />
          <Field id="password" label={t("password")} type="password" autoComplete="current-password" required />
          {error && <Alert kind="error">{error}</Alert>}
          <button type="submit" className={button} disabled={busy}>
            {t("login")}
          </button>
        </form>
        <p className="mt-4 text-sm">
          {t("noAccount")}{" "}
          <Link href="/signup/" className="text-blue-800 underline">
            {t("signup")}
          </Link>
        </p>
      </div>
    </Shell>
  );
}
